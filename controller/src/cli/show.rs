//! The commands that read and print: `validate`, `graph`, `schema`,
//! `observe`, `status`.

use super::*;

pub fn validate(dir: &Path) -> Result<ExitCode, Failure> {
    let spec = load_spec(dir)?;
    for note in &spec.notes {
        eprint!("{}", note.render_note(false));
    }
    let apps: usize = spec.stacks.values().map(|s| s.apps.len()).sum();
    print(&format!(
        "{}: valid ({}, {}, {})\n",
        dir.display(),
        plural(spec.stacks.len(), "stack"),
        plural(apps, "app"),
        plural(spec.hosts.len(), "host"),
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn graph(dir: &Path, format: Format) -> Result<ExitCode, Failure> {
    let spec = load_spec(dir)?;
    print(&drover::load::graph::render(&spec, format));
    Ok(ExitCode::SUCCESS)
}

pub fn convert(file: &Path) -> Result<ExitCode, Failure> {
    match drover::load::convert(file, &ProcessEnv) {
        Ok(text) => {
            print(&text);
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(d)) => {
            eprint!("{}", d.render(use_color(std::io::stderr().is_terminal())));
            Err(Failure::Reported)
        }
        Err(LoadError::Dir { path, reason }) => Err(Failure::Message(format!(
            "cannot convert `{path}`: {reason}"
        ))),
    }
}

pub fn schema(of: SchemaOf) -> Result<ExitCode, Failure> {
    print(&match of {
        SchemaOf::Manifests => schema::manifest_schema(),
        SchemaOf::Compose => schema::compose_schema(),
        SchemaOf::Plan => schema::plan_schema(),
        SchemaOf::Diff => schema::diff_schema(),
    });
    Ok(ExitCode::SUCCESS)
}

pub fn observe(dir: &Path, output: OutputFormat) -> Result<ExitCode, Failure> {
    let spec = load_spec(dir)?;
    let observed = observe_spec(&spec)?;
    match output {
        OutputFormat::Json => {
            print(&(serde_json::to_string_pretty(&observed).expect("serializes") + "\n"))
        }
        OutputFormat::Text => print(&status_table(&desired::render(&spec), &observed)),
    }
    Ok(unreachable_exit(&observed))
}

pub fn status(dir: &Path) -> Result<ExitCode, Failure> {
    let spec = load_spec(dir)?;
    let observed = observe_spec(&spec)?;
    print(&status_table(&desired::render(&spec), &observed));
    let revisions = revision_lines(&observed);
    if !revisions.is_empty() {
        print!("\n{revisions}");
    }
    Ok(unreachable_exit(&observed))
}

/// Under `drover status`: the Git commit a controller last applied to each
/// host that records one.
fn revision_lines(observed: &drover::observed::Observed) -> String {
    let mut out = String::new();
    for (host, oh) in &observed.hosts {
        if let Some(r) = &oh.revision {
            let a = &r.applied;
            out.push_str(&format!(
                "{host}: revision {} \"{}\" applied {}\n",
                &a.sha[..a.sha.len().min(12)],
                a.subject,
                drover::data::clock::rfc3339(a.applied)
            ));
        }
    }
    out
}

/// `drover diff`: the spec of `dir` against the spec of `dir` at Git
/// revision `base`, read from the local repository alone.
pub fn diff(
    dir: &Path,
    base: &str,
    output: PlanFormat,
    detailed_exitcode: bool,
) -> Result<ExitCode, Failure> {
    let new = load_spec(dir)?;
    let tmp = drover::scratch::TempDir::new("diff");
    let (old_dir, sha) = drover::git::write_revision(dir, base, tmp.path())?;
    let old = match load(&old_dir, &ProcessEnv) {
        Ok(spec) => spec,
        Err(LoadError::Invalid(d)) => {
            // Its files are named as in the revision: `REF:path`.
            let shown = d.render(use_color(std::io::stderr().is_terminal()));
            let prefix = format!("{}/", tmp.path().display());
            eprint!("{}", shown.replace(&prefix, &format!("{base}:")));
            eprintln!("the manifests at `{base}` are not valid: nothing to compare with");
            return Err(Failure::Reported);
        }
        Err(e) => return Err(Failure::Message(e.to_string())),
    };
    let d = drover::changes::compare(&desired::render(&old), &desired::render(&new), base, &sha);
    print(&match output {
        PlanFormat::Text => drover::changes::to_text(&d),
        PlanFormat::Json => drover::changes::to_json(&d),
        PlanFormat::Markdown => drover::changes::to_markdown(&d),
    });
    Ok(if detailed_exitcode && !d.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
