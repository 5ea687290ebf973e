//! The system prompt (SPEC §5.1), rebuilt each turn.
//!
//! Order, stable parts first so providers can cache the prefix: the base
//! (environment, output convention, how to use the offered tools) → the
//! operators' instructions (global, then the group's `AGENT.md`) → the
//! agent's `MEMORY.md` → identity → destinations (re-read every turn) →
//! MCP server instructions. The base names places by their in-sandbox
//! names (decision 0009), never by the backend's real paths, so it is the
//! same text for every session and backend.

use pinch_proto::rows::Destination;
use pinch_proto::runner_config::RunnerConfig;
use pinch_providers::ToolSpec;

const ENVIRONMENT: &str = "\
You are a personal assistant that people reach through chat. You run inside a sandboxed Linux system with no \
direct network access.
- Your workspace is /workspace/agent, the working directory of your commands. What you write there stays \
between conversations; it holds your instructions (AGENT.md), your notes (MEMORY.md: keep what you must \
remember there) and conversations/, where earlier parts of long conversations are archived once summarised.
- Files people send you are saved under /workspace/inbox/<message id>/ (read-only); /workspace/global holds \
files shared by all agents (read-only).
- Commands reach the internet only through the HTTP_PROXY/HTTPS_PROXY set for them, and only the hosts the \
operator allowed; anything else is refused.
";

const OUTPUT: &str = "\
## How you answer
Messages arrive in a small XML-like format with their time and sender; <system_response> items are results \
of earlier requests and answers to your questions. A message with kind=\"edit\" is its sender's correction of \
their previous message: answer the corrected version. Your final text is sent to the conversation the newest \
message came from. To send to another destination instead, write <message to=\"NAME\">text</message>; \
anything inside <internal>...</internal> is never sent. Answer briefly and plainly.
";

/// One line per tool group, shown when at least one of its tools is
/// offered: how to use them well, not a repeat of their schemas.
const TOOL_GROUPS: &[(&[&str], &str)] = &[
    (&["shell"], "shell runs a command in your workspace with a timeout; prefer short, non-interactive commands and check their output."),
    (
        &["read_file", "write_file", "edit_file"],
        "read_file, write_file and edit_file work on relative paths in your workspace (and read /workspace/inbox/... and /workspace/global/...); read a file before editing it.",
    ),
    (
        &["send_message", "send_file", "edit_message", "add_reaction", "send_card"],
        "send_message and send_file reach people during a long task (progress, results, files from your workspace); edit_message, add_reaction and send_card refine what was sent. Your final text is sent anyway, so do not repeat it with send_message.",
    ),
    (&["ask_user_question"], "ask_user_question waits for a choice from the user; use it only when you cannot go on without one."),
    (&["admin"], "admin runs pinch admin commands if the owner allowed it; changes to who may reach you need an admin's approval."),
    (&["install_packages", "add_mcp_server"], "install_packages and add_mcp_server ask an admin for packages or an MCP server; they arrive with your next turn."),
    (&["create_agent"], "create_agent makes a helper agent with its own instructions; you then reach it with send_message by its name, and it answers you as `parent`."),
    (
        &["schedule_task", "list_tasks", "update_task", "cancel_task", "pause_task", "resume_task"],
        "schedule_task and its companions run work later or on a schedule; times without a zone are the user's local time.",
    ),
    (&["load_skill"], "load_skill gives a skill's full instructions; load the skill that fits a task before you start it."),
    (&["search_memory", "remember"], "search_memory finds what was said in your earlier conversations and your notes; look there before saying you do not know something the person told you. remember keeps one fact for the long term."),
    (&["web_fetch", "web_search"], "web_search finds pages and web_fetch reads one for you through the host (you have no network of your own); cite the URLs you read, and fetch again rather than guess when a page was cut."),
    (&["view_image"], "view_image shows you an image file (a photo in your inbox, a chart you drew); look before you describe one."),
    (&["send_voice"], "send_voice answers with a spoken message; use it when the person asks for voice or talks to you in voice notes."),
];

/// AGENT.md and MEMORY.md are read up to this much (a FIFO or a link to
/// `/dev/zero` in their place is read as absent, never waited on).
const MAX_NOTES: usize = 1024 * 1024;

/// Context windows at or below this many tokens get [`system_prompt_small`].
pub const SMALL_WINDOW: u32 = 4096;

/// The system prompt for a small local model (a context window of at most
/// [`SMALL_WINDOW`] tokens, no tools): who it is, the operators' and its own
/// notes, and "answer briefly". The full prompt is ~600 tokens, a third of
/// a 2k window, costs tens of seconds of prompt processing on a CPU, and
/// its sandbox and XML conventions only confuse a 135M-parameter model
/// (its bare text goes to the origin anyway, `bare_text="origin"`).
pub fn system_prompt_small(cfg: &RunnerConfig) -> String {
    let name = cfg
        .assistant_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&cfg.agent_name);
    let mut s =
        format!("You are {name}, a helpful personal assistant. Answer briefly and plainly.\n");
    let read = |p: std::path::PathBuf| {
        crate::read::text(&p, MAX_NOTES)
            .ok()
            .filter(|t| !t.trim().is_empty())
    };
    for (file, label) in [("AGENT.md", "Instructions"), ("MEMORY.md", "Notes")] {
        if let Some(t) = read(cfg.paths.workspace_dir.join(file)) {
            // A small window: keep the notes short.
            let t: String = t.trim().chars().take(1500).collect();
            s.push_str(&format!("\n{label}:\n{t}\n"));
        }
    }
    s
}

/// Builds the system prompt. `tools` are the tools offered this turn (empty
/// = none). `mcp_instructions` are (server, instructions) pairs from the
/// agent's MCP servers (and a note for each that failed to start).
pub fn system_prompt(
    cfg: &RunnerConfig,
    dests: &[Destination],
    tools: &[ToolSpec],
    mcp_instructions: &[(String, String)],
) -> String {
    let mut s = String::from(ENVIRONMENT);
    s.push('\n');
    s.push_str(OUTPUT);
    if !tools.is_empty() {
        s.push_str("\n## Tools\nCall a tool when it gets the job done better than words; results come back to you, and an error result says what to fix. When you are done, answer with text and no tool calls.\n");
        let offered = |n: &str| tools.iter().any(|t| t.name == n);
        for (names, line) in TOOL_GROUPS {
            if names.iter().any(|n| offered(n)) {
                s.push_str(&format!("- {line}\n"));
            }
        }
        let known: Vec<&str> = TOOL_GROUPS
            .iter()
            .flat_map(|(n, _)| n.iter().copied())
            .collect();
        let others: Vec<&str> = tools
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !known.contains(n))
            .collect();
        if !others.is_empty() {
            s.push_str(&format!(
                "- Also available: {}; see each tool's description.\n",
                others.join(", ")
            ));
        }
    }
    let read = |p: Option<std::path::PathBuf>| {
        p.and_then(|p| crate::read::text(&p, MAX_NOTES).ok())
            .filter(|t| !t.trim().is_empty())
    };
    if let Some(t) = read(cfg.paths.global_dir.as_ref().map(|d| d.join("AGENT.md"))) {
        s.push_str(&format!("\n## Instructions for all agents\n{}\n", t.trim()));
    }
    if let Some(t) = read(Some(cfg.paths.workspace_dir.join("AGENT.md"))) {
        s.push_str(&format!("\n## Your instructions\n{}\n", t.trim()));
    }
    if let Some(t) = read(Some(cfg.paths.workspace_dir.join("MEMORY.md"))) {
        s.push_str(&format!(
            "\n## Your memory (MEMORY.md in your workspace)\n{}\n",
            t.trim()
        ));
    }
    if tools.iter().any(|t| t.name == "load_skill") {
        let skills = crate::skills::list(cfg);
        if !skills.is_empty() {
            s.push_str("\n## Skills\nInstructions for particular tasks; load one with load_skill when a task fits it:\n");
            for k in skills {
                s.push_str(&format!("- {}: {}\n", k.name, k.description));
            }
        }
    }
    if !cfg.credentials.is_empty() {
        s.push_str("\n## Accounts you can use\nThe owner's credentials below are added by the host to your HTTPS requests to their hosts (through the proxy): call those hosts with curl, gh, git, Python or Node as if signed in, with no token, and never ask anyone for one. The owner may be asked to approve a first use; a refusal comes back as HTTP 403 with a message to pass on.\n");
        for c in &cfg.credentials {
            s.push_str(&format!("- {}: {}\n", c.name, c.hosts.join(", ")));
        }
    }
    s.push_str("\n## Who you are\n");
    match cfg
        .assistant_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(name) => s.push_str(&format!(
            "Your name is {name}. Your agent id is {}.\n",
            cfg.agent_name
        )),
        None => s.push_str(&format!("Your name is {}.\n", cfg.agent_name)),
    }
    if !dests.is_empty() {
        s.push_str("\n## Destinations you can write to\n");
        for d in dests {
            s.push_str(&format!("- {} ({})\n", d.name, d.kind));
        }
    }
    let mcp: Vec<&(String, String)> = mcp_instructions
        .iter()
        .filter(|(_, i)| !i.trim().is_empty())
        .collect();
    if !mcp.is_empty() {
        s.push_str("\n## Instructions from your MCP servers\n");
        for (server, text) in mcp {
            s.push_str(&format!("### {server}\n{}\n", text.trim()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::Env;

    const GOLDEN: &str = "src/golden/system_prompt.txt";

    fn dest(name: &str, kind: &str) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            kind: kind.into(),
            channel_type: None,
            platform_id: None,
            agent_group_id: None,
        }
    }

    /// The whole prompt for a fixed agent, compared with a checked-in file.
    /// Regenerate after a deliberate change with
    /// `PINCH_UPDATE_GOLDEN=1 cargo nextest run -p pinch-runner system_prompt_golden`
    /// and review the diff.
    #[test]
    fn system_prompt_golden() {
        let mut env = Env::new();
        let global = env.cfg.paths.workspace_dir.parent().unwrap().join("global");
        std::fs::create_dir_all(&global).unwrap();
        std::fs::write(global.join("AGENT.md"), "Be kind to everyone.\n").unwrap();
        std::fs::write(
            env.cfg.paths.workspace_dir.join("AGENT.md"),
            "# Instructions\n\nYou help the Smith family.\n",
        )
        .unwrap();
        std::fs::write(
            env.cfg.paths.workspace_dir.join("MEMORY.md"),
            "- Alice likes tea.\n",
        )
        .unwrap();
        std::fs::create_dir_all(global.join("skills/daily-briefing")).unwrap();
        std::fs::write(
            global.join("skills/daily-briefing/SKILL.md"),
            "---\nname: daily-briefing\ndescription: A short morning briefing.\n---\nSteps.\n",
        )
        .unwrap();
        env.cfg.paths.global_dir = Some(global);
        env.cfg.agent_name = "main".into();
        env.cfg.assistant_name = Some("Pinchy".into());
        let dests = [dest("family", "channel"), dest("helper", "agent")];
        let mcp = [("calendar".to_string(), "Dates are ISO 8601.".to_string())];
        let got = system_prompt(&env.cfg, &dests, &crate::tools::specs(), &mcp);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
        if std::env::var("PINCH_UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(got == want, "system prompt differs from {GOLDEN} (PINCH_UPDATE_GOLDEN=1 rewrites it):\n--- got ---\n{got}\n--- want ---\n{want}");
    }

    #[test]
    fn order_and_optional_parts() {
        let env = Env::new();
        std::fs::write(
            env.cfg.paths.workspace_dir.join("MEMORY.md"),
            "remember X\n",
        )
        .unwrap();
        let bare = system_prompt(&env.cfg, &[], &[], &[]);
        assert!(
            !bare.contains("## Tools"),
            "no tools offered, no tools section"
        );
        assert!(!bare.contains("MCP"));
        assert!(bare.contains(&format!("Your name is {}.", env.cfg.agent_name)));
        let full = system_prompt(
            &env.cfg,
            &[dest("family", "channel")],
            &crate::tools::specs(),
            &[("s".into(), "use s".into())],
        );
        let pos = |needle: &str| {
            full.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing"))
        };
        assert!(pos("sandboxed Linux") < pos("## How you answer"));
        assert!(pos("## How you answer") < pos("## Tools"));
        assert!(pos("## Tools") < pos("## Your memory"));
        assert!(pos("## Your memory") < pos("## Who you are"));
        assert!(pos("## Who you are") < pos("## Destinations"));
        assert!(pos("## Destinations") < pos("## Instructions from your MCP servers"));
        // Every built-in tool is covered by a group line (none falls to "Also available").
        assert!(!full.contains("Also available"), "{full}");
    }

    /// The credentials the group may use are listed by name and host, and
    /// never with anything else (the runner never has a value to show).
    #[test]
    fn credentials_are_named_with_their_hosts() {
        let mut env = Env::new();
        let none = system_prompt(&env.cfg, &[], &[], &[]);
        assert!(!none.contains("## Accounts"));
        env.cfg.credentials = vec![pinch_proto::runner_config::Credential {
            name: "github".into(),
            hosts: vec!["api.github.com".into(), "*.githubusercontent.com".into()],
        }];
        let p = system_prompt(&env.cfg, &[], &[], &[]);
        assert!(p.contains("## Accounts you can use"), "{p}");
        assert!(
            p.contains("- github: api.github.com, *.githubusercontent.com\n"),
            "{p}"
        );
        assert!(p.find("## Accounts").unwrap() < p.find("## Who you are").unwrap());
    }

    #[test]
    fn small_models_get_a_short_prompt_with_their_notes() {
        let env = Env::new();
        std::fs::write(
            env.cfg.paths.workspace_dir.join("MEMORY.md"),
            "the user likes tea\n",
        )
        .unwrap();
        let small = system_prompt_small(&env.cfg);
        assert!(
            small.starts_with(&format!(
                "You are {}, a helpful personal assistant.",
                env.cfg.agent_name
            )),
            "{small}"
        );
        assert!(small.contains("the user likes tea"));
        assert!(
            !small.contains("sandbox") && !small.contains("<message"),
            "{small}"
        );
        assert!(
            small.len() < system_prompt(&env.cfg, &[], &[], &[]).len() / 3,
            "{small}"
        );
    }
}
