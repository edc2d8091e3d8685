//! `leash docs cli` (hidden): the CLI reference page, docs/cli.md, rendered from the
//! clap definitions — every subcommand's `--help`, in order. A test keeps the file up to
//! date: regenerate it with `cargo run -p leash -- docs cli > docs/cli.md`.

use std::fmt::Write as _;

/// `leash docs …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum DocsCommand {
    /// Print the CLI reference (docs/cli.md) as Markdown.
    Cli,
}

pub(crate) fn run(cmd: DocsCommand) -> std::process::ExitCode {
    match cmd {
        DocsCommand::Cli => {
            print!(
                "{}",
                cli_reference(<crate::Args as clap::CommandFactory>::command())
            );
            std::process::ExitCode::SUCCESS
        }
    }
}

/// The Markdown page: a contents list, then one section per command with its help.
/// Environment values are never shown (only the variables' names), so the page does
/// not depend on the shell it was made in.
pub(crate) fn cli_reference(cmd: clap::Command) -> String {
    let mut cmd = hide_env_values(cmd);
    cmd.build();
    let mut sections = Vec::new();
    collect(&mut cmd, "leash", &mut sections);
    let mut out = String::new();
    out.push_str("# CLI reference\n\n");
    out.push_str(
        "Every `leash` command and its options, as `leash <command> --help` prints them.\n\
         Generated from the code: `cargo run -p leash -- docs cli > docs/cli.md` (a test\n\
         fails when this page is out of date). Vault-style single-dash flags (`-format=json`)\n\
         are accepted as well as `--format json`.\n\n",
    );
    for (name, _) in &sections {
        let anchor = name.replace(' ', "-");
        let _ = writeln!(out, "* [`{name}`](#{anchor})");
    }
    out.push('\n');
    for (name, help) in &sections {
        let _ = write!(out, "## {name}\n\n```text\n{}\n```\n\n", help.trim_end());
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn hide_env_values(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|a| a.hide_env_values(true));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(cmd, |c, n| c.mut_subcommand(n, hide_env_values))
}

fn collect(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let help = cmd.render_long_help().to_string();
    out.push((path.to_owned(), help));
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        collect(sub, &name, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_cli_md_is_up_to_date() {
        let want = cli_reference(<crate::Args as clap::CommandFactory>::command());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/cli.md is out of date: run `cargo run -p leash -- docs cli > docs/cli.md`"
        );
    }

    #[test]
    fn every_visible_command_has_a_section() {
        let page = cli_reference(<crate::Args as clap::CommandFactory>::command());
        for c in [
            "## leash server",
            "## leash kv get",
            "## leash audit query",
            "## leash agent",
        ] {
            assert!(page.contains(c), "{c} missing");
        }
        assert!(
            !page.contains("## leash docs"),
            "the generator itself is hidden"
        );
    }
}
