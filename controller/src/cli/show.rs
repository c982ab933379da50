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

pub fn schema(compose: bool) -> Result<ExitCode, Failure> {
    print(&match compose {
        true => schema::compose_schema(),
        false => schema::manifest_schema(),
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
