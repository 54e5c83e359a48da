//! Client commands: each speaks only the native REST API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_model::{Catalog, CheckedFile, Diagnostic};
use serde_json::Value;

use crate::render;
use crate::{ClientArgs, Output};

/// Prints a command's answer; a reader gone (`| head`) is an error the caller can tell apart,
/// where `println!` would panic.
fn print_out(text: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Prints what a command did: its JSON object with `--output json`, else its sentence, if any.
fn print_outcome(output: Output, json: Value, sentence: Option<String>) -> std::io::Result<()> {
    match (output, sentence) {
        (Output::Json, _) => print_out(json),
        (Output::Text, Some(sentence)) => print_out(sentence),
        (Output::Text, None) => Ok(()),
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot build an HTTP client")
}

/// Sends a request and returns the JSON body, or the server's error in words.
async fn call(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Value> {
    let response = send(request, url).await?;
    let text = response.text().await.unwrap_or_default();
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    })
}

/// Sends a request; a response that is not a success becomes the server's error in words.
async fn send(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.with_context(|| {
        format!("cannot reach Cairn at {url} (is `cairn up` running? CAIRN_URL selects the server)")
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let path = response.url().path().to_string();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let mut message = match &body {
        // Plain text is the server's own words; markup or nothing means another server.
        Value::String(text) if text.trim().is_empty() || text.trim_start().starts_with('<') => {
            format!("{url} has nothing at {path}: is it Cairn's native API?")
        }
        Value::String(text) => text.trim().to_string(),
        body => body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string()),
    };
    if let Some(diagnostics) = body.get("diagnostics").and_then(Value::as_array)
        && !diagnostics.is_empty()
    {
        let lines: Vec<String> = diagnostics
            .iter()
            .filter_map(|d| serde_json::from_value::<Diagnostic>(d.clone()).ok())
            .map(|d| d.to_string())
            .collect();
        message = lines.join("\n");
    }
    bail!("{message} (HTTP {status})")
}

pub async fn deploy(
    client: &ClientArgs,
    file: &Path,
    no_wait: bool,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let source = file.display().to_string();
    if let Some(value) = cairn_model::lenient_json(&text)
        && let Some(kind) = cairn_model::detect_stratos_kind(&value)
    {
        bail!(
            "{source} is a Stratos {} artifact, not a blueprint: post it to the Stratos API (`cairn up --stratos-api ADDRESS`), or check it with `cairn validate`",
            kind.name()
        );
    }
    let url = format!("{}/v1/blueprints", client.url);
    let body = call(
        http()?
            .post(&url)
            .query(&[("source", source.as_str())])
            .body(text),
        &client.url,
    )
    .await?;
    let deployed: Vec<String> = body
        .get("deployed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if no_wait || client.output == Output::Json {
        if client.output == Output::Json {
            print_out(serde_json::to_string_pretty(&body)?)?;
        } else {
            println!("deploying {}", deployed.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    for app in &deployed {
        wait_until(client, app, Duration::from_secs(timeout), Goal::Active).await?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    Active,
    Gone,
}

/// Polls the runtime view, drawing progress, until the application reaches the goal.
async fn wait_until(
    client: &ClientArgs,
    app: &str,
    timeout: Duration,
    goal: Goal,
) -> anyhow::Result<()> {
    let http = http()?;
    let bar = indicatif::ProgressBar::new(0);
    let style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    };
    // A bar of no members would show full: until members exist, only a spinner.
    let waiting = style("{spinner} {prefix} no members yet {msg}");
    let counting = style("{spinner} {prefix} [{bar:30}] {pos}/{len} members active {msg}");
    bar.set_style(waiting.clone());
    bar.set_prefix(app.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    loop {
        let url = format!("{}/v1/applications/{app}", client.url);
        let response = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach Cairn at {}", client.url))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            if goal == Goal::Gone {
                if bar.is_hidden() && client.output == Output::Text {
                    println!("{app} undeployed");
                }
                bar.finish_with_message("undeployed");
                return Ok(());
            }
        } else {
            let view: Value = response.json().await.unwrap_or(Value::Null);
            let (active, total) = render::member_counts(&view);
            bar.set_style(if total == 0 {
                waiting.clone()
            } else {
                counting.clone()
            });
            bar.set_length(total as u64);
            bar.set_position(active as u64);
            let status = view.get("status").and_then(Value::as_str).unwrap_or("?");
            bar.set_message(status.to_string());
            if goal == Goal::Active && status == "Active" {
                let done = format!("Active in {:.1} s", started.elapsed().as_secs_f64());
                if bar.is_hidden() && client.output == Output::Text {
                    println!("{app} {done}");
                }
                bar.finish_with_message(done);
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            bar.abandon();
            let goal = if goal == Goal::Active {
                "Active"
            } else {
                "undeployed"
            };
            let fault = latest_fault(client, app)
                .await
                .map(|f| format!("; the latest fault: {f}"))
                .unwrap_or_default();
            bail!(
                "{app} did not become {goal} within {} s{fault}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The newest event of the application that says something faulted, as `subject: message`.
async fn latest_fault(client: &ClientArgs, app: &str) -> Option<String> {
    let request = http()
        .ok()?
        .get(format!("{}/v1/events", client.url))
        .query(&[("application", app)]);
    let events = call(request, &client.url).await.ok()?;
    events.as_array()?.iter().rev().find_map(|e| {
        let message = e.get("message")?.as_str()?;
        let subject = e.get("subject")?.as_str()?;
        message
            .starts_with("faulted")
            .then(|| format!("{subject} {message}"))
    })
}

pub async fn apps(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let body = call(
        http()?.get(format!("{}/v1/applications", client.url)),
        &client.url,
    )
    .await?;
    match client.output {
        Output::Json => print_out(serde_json::to_string_pretty(&body)?)?,
        Output::Text => print_out(render::apps_table(&body))?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(client: &ClientArgs, app: &str) -> anyhow::Result<ExitCode> {
    let body = call(
        http()?.get(format!("{}/v1/applications/{app}", client.url)),
        &client.url,
    )
    .await?;
    match client.output {
        Output::Json => print_out(serde_json::to_string_pretty(&body)?)?,
        Output::Text => print_out(render::tree(&body).trim_end())?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn undeploy(
    client: &ClientArgs,
    app: &str,
    no_wait: bool,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    call(
        http()?.post(format!("{}/v1/applications/{app}/undeploy", client.url)),
        &client.url,
    )
    .await?;
    if !no_wait {
        wait_until(client, app, Duration::from_secs(timeout), Goal::Gone).await?;
    }
    let status = if no_wait { "undeploying" } else { "undeployed" };
    // Waiting printed the outcome already.
    let sentence = no_wait.then(|| format!("{app} {status}"));
    let json = serde_json::json!({ "application": app, "status": status });
    print_outcome(client.output, json, sentence)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(client: &ClientArgs, app: &str) -> anyhow::Result<ExitCode> {
    call(
        http()?.delete(format!("{}/v1/applications/{app}", client.url)),
        &client.url,
    )
    .await?;
    let json = serde_json::json!({ "application": app, "status": "deleted" });
    print_outcome(client.output, json, Some(format!("{app} deleted")))?;
    Ok(ExitCode::SUCCESS)
}

/// Posts to a cluster's `scale` or `autoscale` endpoint.
pub async fn scale(
    client: &ClientArgs,
    app: &str,
    alias: &str,
    body: Value,
    action: &str,
) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/v1/applications/{app}/clusters/{alias}/{action}",
        client.url
    );
    call(http()?.post(&url).json(&body), &client.url).await?;
    let sentence = match (body.get("size"), body.get("enabled")) {
        (Some(size), _) => {
            format!("{app}/{alias}: {size} member(s) per group instance, autoscaling suspended")
        }
        (_, Some(Value::Bool(true))) => format!("{app}/{alias}: autoscaling on"),
        _ => format!("{app}/{alias}: autoscaling off, holding its size"),
    };
    let json = serde_json::json!({ "application": app, "cluster": alias, action: body });
    print_outcome(client.output, json, Some(sentence))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(
    client: &ClientArgs,
    app: &str,
    alias: &str,
    follow: bool,
    tail: usize,
) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/applications/{app}/clusters/{alias}/logs", client.url);
    let request = http()?
        .get(&url)
        .query(&[("tail", tail.to_string()), ("follow", follow.to_string())]);
    stream_to_stdout(request, &client.url).await
}

pub async fn events(client: &ClientArgs, app: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/events", client.url);
    let request = http()?.get(&url).query(&[
        ("application", app.to_string()),
        ("follow", follow.to_string()),
    ]);
    if follow || client.output == Output::Json {
        return stream_to_stdout(request, &client.url).await;
    }
    let body = call(request, &client.url).await?;
    print_out(render::events_table(&body))?;
    Ok(ExitCode::SUCCESS)
}

async fn stream_to_stdout(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut response = send(request, url).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("lost the connection to Cairn at {url}"))?
    {
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses and checks files locally; all problems of all files are reported together.
pub fn validate(files: &[PathBuf], output: Output) -> ExitCode {
    let mut problems: Vec<Diagnostic> = Vec::new();
    let mut checked: Vec<CheckedFile> = Vec::new();
    // References are followed only when every file could be read, lest an artifact that did
    // not read be reported missing.
    let mut read_whole = true;
    let mut catalog = Catalog::default();
    let mut policies: Vec<(String, Option<String>)> = Vec::new();
    // Stratos files name no policy to deploy with; exactly one given alongside is taken as it.
    let mut stratos_policies: Vec<String> = Vec::new();
    for file in files {
        let source = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(file_problem(&source, format!("cannot read: {e}")));
                read_whole = false;
                continue;
            }
        };
        let file = check_file(&source, &text);
        problems.extend(file.problems.iter().cloned());
        read_whole &= file.bundle.is_some();
        if let Some(bundle) = &file.bundle {
            if bundle.deploy_with.is_none() {
                stratos_policies.extend(bundle.application_policies.iter().map(|p| p.id.clone()));
            }
            policies.extend(
                bundle
                    .applications
                    .iter()
                    .map(|a| (a.id.clone(), bundle.deploy_with.clone())),
            );
            catalog.add_bundle(bundle.clone());
        }
        checked.push(file);
    }
    // Cross-references are checked once the application policy is known.
    let only_policy = if stratos_policies.len() == 1 {
        stratos_policies.pop()
    } else {
        None
    };
    for (app, policy) in policies.into_iter().filter(|_| read_whole) {
        let Some(policy) = policy.or_else(|| only_policy.clone()) else {
            continue;
        };
        for problem in cairn_model::resolve_in_files(&catalog, &app, &policy, &checked) {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    // Each file's problems in the order of its lines.
    problems.sort_by(|a, b| {
        let line = |d: &Diagnostic| d.location.line.unwrap_or((usize::MAX, 0));
        let file = |d: &Diagnostic| {
            files
                .iter()
                .position(|f| f.display().to_string() == d.location.source)
        };
        (file(a).is_none(), file(a), line(a)).cmp(&(file(b).is_none(), file(b), line(b)))
    });
    match output {
        // A reader gone (`| head`) has what it wanted.
        Output::Json => {
            let _ = print_out(serde_json::to_string_pretty(&problems).unwrap_or_default());
        }
        Output::Text if problems.is_empty() => println!("{} valid", files.len()),
        Output::Text => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{} problem{}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_file(source: &str, text: &str) -> CheckedFile {
    let json = source.ends_with(".json") || text.trim_start().starts_with('{');
    if json {
        cairn_model::check_stratos(source, text)
    } else {
        cairn_model::check_yaml(source, text)
    }
}

fn file_problem(source: &str, message: String) -> Diagnostic {
    Diagnostic {
        location: cairn_model::Location {
            source: source.to_string(),
            line: None,
            path: String::new(),
        },
        message,
    }
}
