//! How a turn invokes the agent CLI (pure): its flavor, its command line
//! and stdin, the MCP config it is given and its environment.

use std::path::{Path, PathBuf};

use pinch_proto::runner_config::CliEngineSettings;
use pinch_providers::TurnRequest;

/// What the CLI finds in `ANTHROPIC_API_KEY` / `OPENAI_API_KEY`: the proxy
/// strips client credentials and injects the host's key.
pub const PLACEHOLDER_KEY: &str = "pinch-placeholder";

/// The known flavors' behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Claude Code: `-p`, `--mcp-config`, `--append-system-prompt-file`;
    /// keeps its own session in `$HOME` and resumes with `--continue`.
    Claude,
    /// Codex: `codex exec … -` with the MCP server given as `-c` overrides;
    /// the system prompt travels on stdin.
    Codex,
    /// Anything else: the arguments you give; what they do not carry
    /// (system prompt, history) travels on stdin.
    Generic,
}

impl Flavor {
    pub fn of(s: &CliEngineSettings) -> Flavor {
        match s.flavor.as_deref() {
            Some("claude") => Flavor::Claude,
            Some("codex") => Flavor::Codex,
            _ => Flavor::Generic,
        }
    }

    /// Whether the CLI continues its own conversation across turns (then
    /// the runner's history is not sent).
    pub(crate) fn resumes(self) -> bool {
        self == Flavor::Claude
    }

    fn default_args(self, model: Option<&str>, fresh: bool) -> Vec<String> {
        let mut a: Vec<&str> = match self {
            Flavor::Claude => vec![
                "-p",
                "--output-format",
                "text",
                "--mcp-config",
                "{mcp_config}",
                "--strict-mcp-config",
                "--append-system-prompt-file",
                "{system_prompt_file}",
                "--permission-mode",
                "bypassPermissions",
            ],
            Flavor::Codex => vec![
                "exec",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "-c",
                "mcp_servers.pinch.command=\"{pinch}\"",
                "-c",
                "mcp_servers.pinch.args=[\"runner\",\"mcp\",\"--socket\",\"{mcp_socket}\"]",
            ],
            Flavor::Generic => vec![],
        };
        if model.is_some() {
            match self {
                Flavor::Claude => a.extend(["--model", "{model}"]),
                Flavor::Codex => a.extend(["-m", "{model}"]),
                Flavor::Generic => {}
            }
        }
        if self == Flavor::Claude && !fresh {
            a.push("--continue");
        }
        if self == Flavor::Codex {
            a.push("-");
        }
        a.into_iter().map(str::to_owned).collect()
    }
}

/// The per-turn files the placeholders name.
pub struct Files {
    pub mcp_config: PathBuf,
    pub mcp_socket: PathBuf,
    pub system_prompt_file: PathBuf,
    pub pinch: PathBuf,
}

/// The program, its arguments and its stdin for one turn.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: String,
}

/// Builds the command line and stdin of a turn (pure).
pub fn invocation(
    s: &CliEngineSettings,
    model: Option<&str>,
    req: &TurnRequest,
    f: &Files,
) -> Invocation {
    let flavor = Flavor::of(s);
    let template = s
        .args
        .clone()
        .unwrap_or_else(|| flavor.default_args(model, req.fresh_continuation));
    let system_in_args = template
        .iter()
        .any(|a| a.contains("{system_prompt_file}") || a.contains("{system_prompt}"));
    let fill = |a: &str| {
        a.replace("{mcp_config}", &f.mcp_config.to_string_lossy())
            .replace("{mcp_socket}", &f.mcp_socket.to_string_lossy())
            .replace("{pinch}", &f.pinch.to_string_lossy())
            .replace(
                "{system_prompt_file}",
                &f.system_prompt_file.to_string_lossy(),
            )
            .replace("{model}", model.unwrap_or(""))
            .replace("{system_prompt}", &req.system)
    };
    let args = template.iter().map(|a| fill(a)).collect();
    let mut stdin = String::new();
    if !system_in_args && !req.system.is_empty() {
        stdin.push_str("<system>\n");
        stdin.push_str(&req.system);
        stdin.push_str("\n</system>\n\n");
    }
    if !flavor.resumes() && !req.history.is_empty() {
        stdin.push_str("<conversation_so_far>\n");
        for (role, text) in &req.history {
            stdin.push_str(&format!("<{role}>\n{text}\n</{role}>\n"));
        }
        stdin.push_str("</conversation_so_far>\n\n");
    }
    stdin.push_str(&req.prompt);
    Invocation {
        program: s.command.clone(),
        args,
        stdin,
    }
}

/// The MCP config the CLI is given (Claude Code's `--mcp-config` shape).
pub fn mcp_config_json(pinch: &Path, socket: &Path) -> String {
    serde_json::json!({
        "mcpServers": {
            "pinch": {
                "type": "stdio",
                "command": pinch.to_string_lossy(),
                "args": ["runner", "mcp", "--socket", socket.to_string_lossy()],
            }
        }
    })
    .to_string()
}

/// The environment pinch gives the CLI on top of the runner's (which the
/// sandbox already cleared): model API base URLs through the egress
/// forwarder with placeholder keys, the proxy for tools, where the MCP
/// config is; for Claude Code, `IS_SANDBOX=1`, which it requires before it
/// runs in bypass-permissions mode as root (uid 0 in the sandbox when pinch
/// runs as root) — the CLI does run inside pinch's sandbox. The operator's
/// `env` comes last and wins.
pub fn environment(
    s: &CliEngineSettings,
    egress: Option<&str>,
    f: &Files,
) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| e.push((k.to_owned(), v.to_owned()));
    if let Some(p) = egress.filter(|p| !p.is_empty()) {
        let p = p.trim_end_matches('/');
        set("ANTHROPIC_BASE_URL", &format!("{p}/anthropic"));
        set("OPENAI_BASE_URL", &format!("{p}/openai"));
        for (k, v) in crate::egress::proxy_vars(p) {
            set(k, &v);
        }
        // The API base URLs are the forwarder itself: never via the proxy.
        set("NO_PROXY", "127.0.0.1,localhost");
        set("no_proxy", "127.0.0.1,localhost");
    }
    set("ANTHROPIC_API_KEY", PLACEHOLDER_KEY);
    set("OPENAI_API_KEY", PLACEHOLDER_KEY);
    set("PINCH_MCP_CONFIG", &f.mcp_config.to_string_lossy());
    set("PINCH_MCP_SOCKET", &f.mcp_socket.to_string_lossy());
    set(
        "PINCH_SYSTEM_PROMPT_FILE",
        &f.system_prompt_file.to_string_lossy(),
    );
    if Flavor::of(s) == Flavor::Claude {
        set("IS_SANDBOX", "1");
    }
    for (k, v) in &s.env {
        e.push((k.clone(), v.clone()));
    }
    e
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn files() -> Files {
        Files {
            mcp_config: "/tmp/t/mcp.json".into(),
            mcp_socket: "/tmp/t/tools.sock".into(),
            system_prompt_file: "/tmp/t/system.md".into(),
            pinch: "/opt/pinch/bin/pinch".into(),
        }
    }

    /// A request with a system prompt and some history.
    pub(in crate::cli_engine) fn req(fresh: bool) -> TurnRequest {
        TurnRequest {
            system: "SYS".into(),
            prompt: "PROMPT".into(),
            fresh_continuation: fresh,
            history: vec![
                ("user".into(), "earlier q".into()),
                ("assistant".into(), "earlier a".into()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn claude_flavor_passes_files_by_flag_and_resumes_its_own_session() {
        let s = CliEngineSettings {
            command: "claude".into(),
            flavor: Some("claude".into()),
            ..Default::default()
        };
        let fresh = invocation(&s, Some("sonnet"), &req(true), &files());
        let a = fresh.args.join(" ");
        assert!(
            a.starts_with("-p --output-format text --mcp-config /tmp/t/mcp.json"),
            "{a}"
        );
        assert!(
            a.contains("--append-system-prompt-file /tmp/t/system.md")
                && a.contains("--model sonnet"),
            "{a}"
        );
        assert!(!a.contains("--continue"), "{a}");
        assert_eq!(
            fresh.stdin, "PROMPT",
            "system by file, history kept by the CLI"
        );
        let again = invocation(&s, None, &req(false), &files());
        assert!(
            again.args.ends_with(&["--continue".to_owned()]),
            "{:?}",
            again.args
        );
        assert!(!again.args.iter().any(|x| x == "--model"));
        assert_eq!(again.stdin, "PROMPT");
    }

    #[test]
    fn generic_flavor_sends_what_its_args_do_not_carry_on_stdin() {
        let s = CliEngineSettings {
            command: "agent".into(),
            ..Default::default()
        };
        let i = invocation(&s, None, &req(false), &files());
        assert!(i.args.is_empty());
        assert_eq!(
            i.stdin,
            "<system>\nSYS\n</system>\n\n<conversation_so_far>\n<user>\nearlier q\n</user>\n<assistant>\nearlier a\n</assistant>\n</conversation_so_far>\n\nPROMPT"
        );
        let s = CliEngineSettings {
            command: "agent".into(),
            args: Some(vec![
                "--mcp={mcp_config}".into(),
                "--sys".into(),
                "{system_prompt_file}".into(),
                "{pinch}".into(),
            ]),
            ..Default::default()
        };
        let i = invocation(&s, None, &req(true), &files());
        assert_eq!(
            i.args,
            [
                "--mcp=/tmp/t/mcp.json",
                "--sys",
                "/tmp/t/system.md",
                "/opt/pinch/bin/pinch"
            ]
        );
        assert!(
            i.stdin.contains("earlier q") && !i.stdin.contains("SYS"),
            "{}",
            i.stdin
        );
    }

    #[test]
    fn codex_flavor_names_the_bridge_by_overrides_and_reads_stdin() {
        let s = CliEngineSettings {
            command: "codex".into(),
            flavor: Some("codex".into()),
            ..Default::default()
        };
        let i = invocation(&s, Some("gpt-5"), &req(true), &files());
        assert_eq!(i.args.first().map(String::as_str), Some("exec"));
        assert!(
            i.args
                .contains(&"mcp_servers.pinch.command=\"/opt/pinch/bin/pinch\"".to_owned()),
            "{:?}",
            i.args
        );
        assert!(i.args.contains(
            &"mcp_servers.pinch.args=[\"runner\",\"mcp\",\"--socket\",\"/tmp/t/tools.sock\"]"
                .to_owned()
        ));
        assert_eq!(i.args.last().map(String::as_str), Some("-"));
        assert!(i.stdin.starts_with("<system>\nSYS\n</system>") && i.stdin.ends_with("PROMPT"));
    }

    #[test]
    fn environment_routes_apis_through_the_forwarder_with_placeholder_keys() {
        let mut s = CliEngineSettings {
            command: "x".into(),
            ..Default::default()
        };
        s.env
            .insert("OPENAI_BASE_URL".into(), "http://override".into());
        let e = environment(&s, Some("http://127.0.0.1:3128"), &files());
        let get = |k: &str| {
            e.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("ANTHROPIC_BASE_URL"),
            Some("http://127.0.0.1:3128/anthropic")
        );
        assert_eq!(get("ANTHROPIC_API_KEY"), Some(PLACEHOLDER_KEY));
        assert_eq!(get("OPENAI_API_KEY"), Some(PLACEHOLDER_KEY));
        assert_eq!(get("HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("NO_PROXY"), Some("127.0.0.1,localhost"));
        assert_eq!(
            get("OPENAI_BASE_URL"),
            Some("http://override"),
            "the operator's env wins"
        );
        let e = environment(&CliEngineSettings::default(), None, &files());
        assert!(
            !e.iter().any(|(k, _)| k == "ANTHROPIC_BASE_URL"),
            "no forwarder, no base URL"
        );
        assert!(
            !e.iter().any(|(k, _)| k == "IS_SANDBOX"),
            "only Claude Code is told it is sandboxed"
        );
        let claude = CliEngineSettings {
            command: "claude".into(),
            flavor: Some("claude".into()),
            ..Default::default()
        };
        let e = environment(&claude, None, &files());
        assert!(
            e.contains(&("IS_SANDBOX".to_owned(), "1".to_owned())),
            "{e:?}"
        );
    }

    #[test]
    fn mcp_config_names_pinch_runner_mcp() {
        let v: serde_json::Value = serde_json::from_str(&mcp_config_json(
            Path::new("/opt/pinch/bin/pinch"),
            Path::new("/tmp/x/tools.sock"),
        ))
        .unwrap();
        assert_eq!(v["mcpServers"]["pinch"]["command"], "/opt/pinch/bin/pinch");
        assert_eq!(
            v["mcpServers"]["pinch"]["args"],
            serde_json::json!(["runner", "mcp", "--socket", "/tmp/x/tools.sock"])
        );
    }
}
