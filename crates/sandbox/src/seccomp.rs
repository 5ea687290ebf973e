//! The seccomp filter every bwrap sandbox runs under (SPEC §8, issue 8):
//! a classic-BPF program bubblewrap installs (`--seccomp FD`, with
//! `no_new_privs`) just before it executes the runner, so it covers the
//! runner and everything the agent starts.
//!
//! It is a deny list, not an allow list: agents run arbitrary tools
//! (shells, compilers, interpreters), and an allow list that breaks them is
//! one users switch off. What it denies is what an agent never needs and an
//! attacker wants: tracing other processes, mounting, loading kernel code
//! (modules, kexec, eBPF), new namespaces (a fresh user namespace would hand
//! back capabilities inside it), keyrings, `userfaultfd` and
//! `perf_event_open` (common kernel exploit primitives), reading other
//! processes' memory, changing the clock, rebooting, swap, accounting. Any
//! other architecture's ABI (i386 `int 0x80`, x32) kills the process:
//! a filter keyed on x86-64 numbers would not cover them.
//!
//! Denied calls fail with `EPERM` (the program sees an ordinary error);
//! `clone3` fails with `ENOSYS` because its flags sit behind a pointer the
//! filter cannot read, and libc then falls back to `clone`, whose flags it
//! can: `clone` with any namespace flag is denied.
//!
//! The program is compiled by `seccompiler` (rust-vmm, Firecracker's) from
//! the list and the `clone` rules; two checks it has no words for — a
//! second errno (`clone3`'s `ENOSYS` beside everyone else's `EPERM`) and the
//! x32 bit in the syscall number — are spliced in right after its
//! architecture check (decision 0029).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Classic BPF opcodes (`linux/filter.h`) of the spliced instructions.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

const RET_ERRNO: u32 = 0x0005_0000;
#[cfg(target_arch = "x86_64")]
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// `offsetof(struct seccomp_data, nr)`.
const OFF_NR: u32 = 0;

#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;

/// x32 syscalls on x86-64 have this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET`
/// (`NEWTIME` shares CSIGNAL's low bits, so only clone3 could ask for it).
pub const CLONE_NS_FLAGS: [u32; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The denied syscalls, by name (for the docs and tests) and number.
pub fn denied() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("syslog", libc::SYS_syslog),
        ("vhangup", libc::SYS_vhangup),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        // io_uring runs file and network operations from kernel workers the
        // rest of this filter never sees (issue 14).
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        ("modify_ldt", libc::SYS_modify_ldt),
    ]);
    v
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> BpfProgram {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|(_, nr)| (nr, vec![])).collect();
    // clone with any namespace flag (low 32 bits of the first argument).
    let clone = CLONE_NS_FLAGS
        .iter()
        .map(|&f| {
            let flag = u64::from(f);
            let c = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .expect("a condition on argument 0");
            SeccompRule::new(vec![c]).expect("a rule with one condition")
        })
        .collect();
    rules.insert(libc::SYS_clone, clone);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TARGET,
    )
    .expect("allow and EPERM are different actions");
    let mut p: BpfProgram = filter.try_into().expect("the filter fits in a program");
    // seccompiler's program opens with the architecture check (load arch,
    // jump over the kill when native, kill) and the load of the syscall
    // number; what follows only jumps forward, relative to itself, so
    // instructions inserted right after that load move nothing it aims at.
    assert!(
        p.len() > 4 && p[3] == insn(BPF_LD_W_ABS, 0, 0, OFF_NR) && p[1].jt == 1,
        "seccompiler's program no longer opens with the arch check and the number load"
    );
    let mut prelude = Vec::new();
    // Another ABI's numbering on this architecture (x32) is killed: the
    // list is keyed on x86-64 numbers.
    #[cfg(target_arch = "x86_64")]
    prelude.extend([
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
    ]);
    prelude.extend([
        insn(BPF_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        insn(BPF_RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
    ]);
    p.splice(4..4, prelude);
    p
}

/// The program in the byte layout the kernel (and bwrap) read: each
/// instruction is `u16 code, u8 jt, u8 jf, u32 k`, native endian.
pub fn bytes() -> Vec<u8> {
    let mut out = Vec::new();
    for i in program() {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// A sealed in-memory file holding the program, positioned at its start,
/// for bwrap's `--seccomp FD` (close-on-exec: the spawner dups it to the
/// fd number it names).
pub fn memfd() -> std::io::Result<OwnedFd> {
    let name = c"pinch-seccomp";
    // SAFETY: a valid C string; flags are constants.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(owned);
    f.write_all(&bytes())?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: fcntl on an fd we own.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL,
        )
    };
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;

    /// Runs the program over a `seccomp_data` the way the kernel would;
    /// returns the action and how many instructions ran. Any opcode or
    /// load the kernel would refuse, or a jump out of the program, panics.
    fn run(p: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> (u32, usize) {
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let i = p.get(pc).expect("a jump stays inside the program");
            pc += 1;
            steps += 1;
            let jump = |cond: bool| if cond { i.jt } else { i.jf } as usize;
            match i.code {
                0x20 => {
                    acc = match i.k {
                        0 => nr,
                        4 => arch,
                        16 => arg0 as u32,
                        20 => (arg0 >> 32) as u32,
                        k => panic!("load of offset {k}"),
                    }
                }
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += jump(acc == i.k),
                0x25 => pc += jump(acc > i.k),
                0x35 => pc += jump(acc >= i.k),
                0x45 => pc += jump(acc & i.k != 0),
                0x06 => return (i.k, steps),
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    fn action(p: &[sock_filter], arch: u32, nr: i64, arg0: u64) -> u32 {
        run(p, arch, nr as u32, arg0).0
    }

    #[test]
    fn denies_the_list_and_allows_the_rest() {
        let p = program();
        for (name, nr) in denied() {
            assert_eq!(action(&p, AUDIT_ARCH, nr, 0), EPERM, "{name}");
        }
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("openat", libc::SYS_openat),
            ("execve", libc::SYS_execve),
            ("exit_group", libc::SYS_exit_group),
            ("getppid", libc::SYS_getppid),
        ] {
            assert_eq!(action(&p, AUDIT_ARCH, nr, 0), RET_ALLOW, "{name}");
        }
        // Every number the kernel knows of that is not listed is allowed.
        let listed: Vec<i64> = denied().iter().map(|(_, nr)| *nr).collect();
        for nr in 0..500i64 {
            if !listed.contains(&nr) && nr != libc::SYS_clone && nr != libc::SYS_clone3 {
                assert_eq!(action(&p, AUDIT_ARCH, nr, u64::MAX), RET_ALLOW, "{nr}");
            }
        }
    }

    #[test]
    fn clone_only_without_namespaces_and_clone3_falls_back() {
        let p = program();
        let clone = libc::SYS_clone;
        // fork-like and thread-like clones
        assert_eq!(
            action(&p, AUDIT_ARCH, clone, libc::SIGCHLD as u64),
            RET_ALLOW
        );
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(action(&p, AUDIT_ARCH, clone, thread), RET_ALLOW);
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                action(&p, AUDIT_ARCH, clone, flag as u64 | libc::SIGCHLD as u64),
                EPERM,
                "{flag:#x}"
            );
            // With the high half of the register set too (only the low 32
            // bits are flags).
            assert_eq!(
                action(&p, AUDIT_ARCH, clone, (0xffff_ffff << 32) | flag as u64),
                EPERM,
                "{flag:#x} with the high half set"
            );
        }
        assert_eq!(action(&p, AUDIT_ARCH, libc::SYS_clone3, 0), ENOSYS);
    }

    #[test]
    fn other_abis_are_killed() {
        let p = program();
        assert_eq!(run(&p, 0x4000_0003, 0, 0).0, KILL_PROCESS, "i386");
        #[cfg(target_arch = "x86_64")]
        for nr in [libc::SYS_read, libc::SYS_ptrace, 521] {
            assert_eq!(
                run(&p, AUDIT_ARCH, X32_SYSCALL_BIT | nr as u32, 0).0,
                KILL_PROCESS,
                "x32 {nr}"
            );
        }
    }

    /// What an allowed call costs the filter (kernels since 5.11 skip the
    /// filter for calls whose answer never depends on an argument; older
    /// ones run it): the figure decision 0029 quotes.
    #[test]
    fn an_allowed_call_runs_a_bounded_number_of_instructions() {
        let p = program();
        let (a, steps) = run(&p, AUDIT_ARCH, libc::SYS_getppid as u32, 0);
        assert_eq!(a, RET_ALLOW);
        let worst = (0..500u32)
            .map(|nr| run(&p, AUDIT_ARCH, nr, u64::MAX).1)
            .max()
            .unwrap();
        eprintln!(
            "program: {} instructions; getppid runs {steps}, the longest path {worst}",
            p.len()
        );
        assert!(p.len() < 400 && worst < 160, "{} {worst}", p.len());
    }

    #[test]
    fn the_bytes_are_eight_per_instruction_and_the_memfd_holds_them() {
        use std::io::Read;
        let b = bytes();
        assert_eq!(b.len(), program().len() * 8);
        let mut f = std::fs::File::from(memfd().unwrap());
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, b);
    }
}
