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

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// `offsetof(struct seccomp_data, nr / arch / args[0])` (low 32 bits of
/// the first argument on a little-endian machine).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// x32 syscalls on x86-64 have this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET`
/// (and `NEWTIME`, which shares CSIGNAL's low bits only via clone3).
const CLONE_NS_FLAGS: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

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

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> Vec<Insn> {
    let denied = denied();
    let mut p = vec![
        insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.push(insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT));
    #[cfg(target_arch = "x86_64")]
    p.push(insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS));
    // Then: one JEQ per denied call (to DENY), the clone checks, and the
    // three returns [ALLOW, DENY, NOSYS] at the end. Jumps are relative to
    // the next instruction and fit in a u8 (checked below).
    let first = p.len();
    let n = denied.len();
    // Layout after the list: clone: JEQ clone; LD arg0; JSET ns; clone3: JEQ clone3; ALLOW; DENY; NOSYS
    let clone_at = first + n;
    let allow = clone_at + 4;
    let deny = allow + 1;
    let nosys = allow + 2;
    let rel = |from: usize, to: usize| -> u8 {
        u8::try_from(to - from - 1).expect("seccomp jump fits in 8 bits")
    };
    for (i, (_, nr)) in denied.iter().enumerate() {
        let at = first + i;
        p.push(insn(BPF_JEQ_K, rel(at, deny), 0, *nr as u32));
    }
    // clone with namespace flags → DENY; other clone → ALLOW.
    p.push(insn(
        BPF_JEQ_K,
        0,
        rel(clone_at, clone_at + 3),
        libc::SYS_clone as u32,
    ));
    p.push(insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO));
    p.push(insn(
        BPF_JSET_K,
        rel(clone_at + 2, deny),
        rel(clone_at + 2, allow),
        CLONE_NS_FLAGS,
    ));
    p.push(insn(
        BPF_JEQ_K,
        rel(clone_at + 3, nosys),
        0,
        libc::SYS_clone3 as u32,
    ));
    debug_assert_eq!(p.len(), allow);
    p.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(insn(BPF_RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32));
    p.push(insn(BPF_RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
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

    /// Runs the program over a `seccomp_data` the way the kernel would.
    fn run(p: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0,
                        k => panic!("load of offset {k}"),
                    }
                }
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                BPF_JSET_K => pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn denies_the_list_and_allows_the_rest() {
        let p = program();
        for (name, nr) in denied() {
            assert_eq!(
                run(&p, AUDIT_ARCH, nr as u32, 0),
                RET_ERRNO | libc::EPERM as u32,
                "{name}"
            );
        }
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("openat", libc::SYS_openat),
            ("execve", libc::SYS_execve),
            ("exit_group", libc::SYS_exit_group),
        ] {
            assert_eq!(run(&p, AUDIT_ARCH, nr as u32, 0), RET_ALLOW, "{name}");
        }
    }

    #[test]
    fn clone_only_without_namespaces_and_clone3_falls_back() {
        let p = program();
        let clone = libc::SYS_clone as u32;
        // fork-like and thread-like clones
        assert_eq!(run(&p, AUDIT_ARCH, clone, libc::SIGCHLD as u32), RET_ALLOW);
        assert_eq!(
            run(
                &p,
                AUDIT_ARCH,
                clone,
                (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32
            ),
            RET_ALLOW
        );
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
                run(&p, AUDIT_ARCH, clone, flag as u32 | libc::SIGCHLD as u32),
                RET_ERRNO | libc::EPERM as u32,
                "{flag:#x}"
            );
        }
        assert_eq!(
            run(&p, AUDIT_ARCH, libc::SYS_clone3 as u32, 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn other_abis_are_killed() {
        let p = program();
        assert_eq!(run(&p, 0x4000_0003, 0, 0), RET_KILL_PROCESS, "i386");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(&p, AUDIT_ARCH, X32_SYSCALL_BIT | libc::SYS_read as u32, 0),
            RET_KILL_PROCESS,
            "x32"
        );
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
