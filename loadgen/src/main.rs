//! loadgen: SMTP / POP3 / IMAP load generator. See README.md.

mod cli;
mod conn;
mod env;
mod imap;
mod msggen;
mod plot;
mod pop3;
mod reply;
mod sched;
mod smtp;
mod stats;
mod tls;
mod verify;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;

use cli::{Cli, Cmd, Common};
use env::{Accounts, Env};
use stats::{Live, Report, ReportMeta, Stats};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.cmd {
        Cmd::Smtp(a) => &a.common,
        Cmd::Pop3(a) => &a.common,
        Cmd::Imap(a) => &a.common,
        Cmd::ImapIdle(a) => &a.common,
        Cmd::Mixed(a) => &a.common,
    };
    let env = match Env::from_common(common) {
        Ok(e) => e,
        Err(e) => return usage_error(&e),
    };
    let rt = if env.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(env.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => return usage_error(&format!("cannot start runtime: {e}")),
    };
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Smtp(a) => cmd_smtp(a, env).await,
            Cmd::Pop3(a) => cmd_pop3(a, env).await,
            Cmd::Imap(a) => imap::cmd_imap(a, env).await,
            Cmd::ImapIdle(a) => imap::cmd_imap_idle(a, env).await,
            Cmd::Mixed(a) => cmd_mixed(a, env).await,
        }
    });
    // Do not wait for lingering tasks (e.g. a progress printer sleeping).
    rt.shutdown_timeout(Duration::from_millis(100));
    match res {
        Ok(code) => code,
        Err(e) => usage_error(&e),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("loadgen: {msg}");
    ExitCode::from(2)
}

/// Print the report(s), write the hdr log and the plot.
pub fn finish(
    common: &Common,
    json: serde_json::Value,
    human: String,
    parts: &[(&str, &Stats)],
    started: SystemTime,
    measured: Duration,
    title: &str,
) -> Result<(), String> {
    if common.json {
        println!(
            "{}",
            serde_json::to_string(&json).map_err(|e| e.to_string())?
        );
    } else {
        print!("{human}");
    }
    if let Some(p) = &common.hdr_log {
        stats::write_hdr_log(p, parts, started, measured)
            .map_err(|e| format!("--hdr-log {}: {e}", p.display()))?;
    }
    if let Some(p) = &common.plot {
        plot::draw(p, title, parts).map_err(|e| format!("--plot {}: {e}", p.display()))?;
    }
    Ok(())
}

fn check_positive(name: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{name} must be a positive number"));
    }
    Ok(())
}

fn check_smtp_opts(o: &cli::SmtpOpts, connections: u32) -> Result<(), String> {
    if connections == 0 || connections > 100_000 {
        return Err("--connections must be 1 .. 100000".into());
    }
    if let Some(r) = o.rate {
        check_positive("--rate", r)?;
    }
    if let Some(d) = o.duration {
        env::secs("--duration", d)?;
    }
    env::secs("--warmup", o.warmup)?;
    if o.recipients_per_message == 0 {
        return Err("--recipients-per-message must be at least 1".into());
    }
    if o.reuse == Some(0) {
        return Err("--reuse must be at least 1".into());
    }
    if o.verify && o.verify_pop3.is_none() && o.verify_imap.is_none() {
        return Err("--verify needs --verify-pop3 ADDR or --verify-imap ADDR".into());
    }
    if let Some(p) = &o.message_file {
        std::fs::File::open(p).map_err(|e| format!("--message-file {}: {e}", p.display()))?;
    }
    Ok(())
}

async fn cmd_smtp(a: cli::SmtpArgs, env: Env) -> Result<ExitCode, String> {
    check_smtp_opts(&a.opts, a.connections)?;
    let accounts = Arc::new(Accounts::from_args(&a.accounts)?);
    let started = SystemTime::now();
    let live = Arc::new(Live::default());
    stats::spawn_progress(
        format!("smtp {}", a.target),
        "msg",
        live.clone(),
        env.progress,
        Instant::now(),
    );
    let cfg = smtp::SmtpCfg {
        target: a.target.clone(),
        connections: a.connections,
        opts: a.opts.clone(),
    };
    let out = smtp::run(cfg, accounts.clone(), env.clone(), live.clone()).await;
    live.stop.store(true, Ordering::Relaxed);
    if let Some(f) = &out.fatal {
        return Err(f.clone());
    }
    let meta = ReportMeta {
        mode: "smtp",
        target: a.target.clone(),
        run_id: env.run_id.clone(),
        started,
        connections: a.connections as u64,
        threads: env.threads as u64,
        warmup: Duration::from_secs_f64(a.opts.warmup),
        rate: a.opts.rate,
        tls: env.tls_mode(),
    };
    let mut report = Report::build(meta, &out.stats, out.measured);
    if let Some(expected) = &out.expected {
        report.verify =
            Some(run_verify(&a.opts, &a.common, expected, &accounts, &env, a.connections).await);
    }
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    finish(
        &a.common,
        json,
        report.human(),
        &[("", &out.stats)],
        started,
        out.measured,
        &format!("loadgen smtp {}", a.target),
    )?;
    Ok(match &report.verify {
        Some(v) if !v.ok => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// Read back every mailbox that was sent to and reconcile.
async fn run_verify(
    o: &cli::SmtpOpts,
    _common: &Common,
    expected: &verify::Expected,
    accounts: &Arc<Accounts>,
    env: &Env,
    connections: u32,
) -> verify::VerifyReport {
    if o.verify_wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(o.verify_wait)).await;
    }
    let (method, addr) = match (&o.verify_pop3, &o.verify_imap) {
        (Some(p), _) => ("pop3", p.clone()),
        (None, Some(i)) => ("imap", i.clone()),
        (None, None) => unreachable!("checked in check_smtp_opts"),
    };
    let accts = expected.accounts();
    let queue = Arc::new(std::sync::Mutex::new(accts.clone()));
    let run_id = Arc::new(env.run_id.clone());
    let mut handles = Vec::new();
    for _ in 0..connections.clamp(1, 16) {
        let queue = queue.clone();
        let accounts = accounts.clone();
        let addr = addr.clone();
        let run_id = run_id.clone();
        let timeout = env.timeout;
        let tls = env.tls.clone();
        handles.push(tokio::spawn(async move {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            // bounded: each iteration removes one account from the queue
            loop {
                let Some(acct) = queue.lock().unwrap().pop() else {
                    break;
                };
                let user = &accounts.logins[acct as usize];
                let pass = &accounts.password;
                let each = |m: &[u8]| found.push((acct, verify::parse_retrieved(&run_id, m)));
                let r = if method == "pop3" {
                    pop3::fetch_all(&addr, user, pass, timeout, tls.as_ref(), each).await
                } else {
                    imap::fetch_all(&addr, user, pass, "INBOX", timeout, tls.as_ref(), each).await
                };
                if let Err(e) = r {
                    errors.push(format!("account {user}: {e}"));
                }
            }
            (found, errors)
        }));
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        if let Ok((f, e)) = h.await {
            found.extend(f);
            errors.extend(e);
        } else {
            errors.push("verify worker panicked".into());
        }
    }
    let mut r = verify::reconcile(
        method,
        expected,
        &found,
        accts.len() as u64,
        errors.len() as u64,
    );
    for e in errors
        .into_iter()
        .take(10usize.saturating_sub(r.examples.len()))
    {
        r.examples.push(format!("fetch error: {e}"));
    }
    r
}

async fn cmd_pop3(a: cli::Pop3Args, env: Env) -> Result<ExitCode, String> {
    if a.connections == 0 || a.connections > 100_000 {
        return Err("--connections must be 1 .. 100000".into());
    }
    if let Some(d) = a.opts.duration {
        env::secs("--duration", d)?;
    }
    if let Some(r) = a.opts.rate {
        check_positive("--rate", r)?;
    }
    env::secs("--warmup", a.opts.warmup)?;
    let accounts = Arc::new(Accounts::from_args(&a.accounts)?);
    let started = SystemTime::now();
    let live = Arc::new(Live::default());
    stats::spawn_progress(
        format!("pop3 {}", a.target),
        "msg",
        live.clone(),
        env.progress,
        Instant::now(),
    );
    let (st, measured) = pop3::run(
        a.target.clone(),
        a.connections,
        a.opts.clone(),
        accounts,
        env.clone(),
        live.clone(),
    )
    .await;
    live.stop.store(true, Ordering::Relaxed);
    let meta = ReportMeta {
        mode: "pop3",
        target: a.target.clone(),
        run_id: env.run_id.clone(),
        started,
        connections: a.connections as u64,
        threads: env.threads as u64,
        warmup: Duration::from_secs_f64(a.opts.warmup),
        rate: a.opts.rate,
        tls: env.tls_mode(),
    };
    let report = Report::build(meta, &st, measured);
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    finish(
        &a.common,
        json,
        report.human(),
        &[("", &st)],
        started,
        measured,
        &format!("loadgen pop3 {}", a.target),
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn cmd_mixed(a: cli::MixedArgs, env: Env) -> Result<ExitCode, String> {
    if a.smtp_target.is_none() && a.pop3_target.is_none() && a.imap_target.is_none() {
        return Err(
            "mixed: give at least one of --smtp-target, --pop3-target, --imap-target".into(),
        );
    }
    check_positive("--duration", a.duration)?;
    env::secs("--duration", a.duration)?;
    env::secs("--warmup", a.warmup)?;
    imap::Mix::parse(&a.imap_mix)?;
    env::raise_nofile();
    let accounts = Arc::new(Accounts::from_args(&a.accounts)?);
    let started = SystemTime::now();
    let t0 = Instant::now();
    let smtp_opts = cli::SmtpOpts {
        messages: None,
        duration: Some(a.duration),
        warmup: a.warmup,
        size: a.size,
        recipients_per_message: a.recipients_per_message,
        recipient_order: cli::RcptOrder::RoundRobin,
        from: a.from.clone(),
        message_file: None,
        helo: "loadgen.example.test".into(),
        no_pipelining: a.no_pipelining,
        bdat: false,
        reuse: None,
        rate: a.rate,
        verify: false,
        verify_pop3: None,
        verify_imap: None,
        verify_wait: 0.0,
    };
    check_smtp_opts(&smtp_opts, a.smtp_connections)?;
    let pop3_opts = cli::Pop3Opts {
        sessions: None,
        duration: Some(a.duration),
        warmup: a.warmup,
        delete: a.pop3_delete,
        max_retr: a.pop3_max_retr,
        // The mixed run's readers are a closed loop.
        rate: None,
    };
    let imap_opts = cli::ImapOpts {
        duration: a.duration,
        warmup: a.warmup,
        mix: a.imap_mix.clone(),
        window: 50,
        idle_ms: 100,
        search: "UNSEEN".into(),
        mailbox: "INBOX".into(),
    };
    let lives: Vec<Arc<Live>> = (0..3).map(|_| Arc::new(Live::default())).collect();
    let smtp_fut = {
        let (accounts, env, live) = (accounts.clone(), env.clone(), lives[0].clone());
        let target = a.smtp_target.clone();
        let connections = a.smtp_connections;
        async move {
            let t = target?;
            stats::spawn_progress(format!("smtp {t}"), "msg", live.clone(), env.progress, t0);
            let cfg = smtp::SmtpCfg {
                target: t,
                connections,
                opts: smtp_opts,
            };
            Some(smtp::run(cfg, accounts, env, live).await)
        }
    };
    let pop3_fut = {
        let (accounts, env, live) = (accounts.clone(), env.clone(), lives[1].clone());
        let target = a.pop3_target.clone();
        let connections = a.pop3_connections;
        async move {
            let t = target?;
            stats::spawn_progress(format!("pop3 {t}"), "msg", live.clone(), env.progress, t0);
            Some(pop3::run(t, connections, pop3_opts, accounts, env, live).await)
        }
    };
    let imap_fut = {
        let (accounts, env, live) = (accounts.clone(), env.clone(), lives[2].clone());
        let target = a.imap_target.clone();
        let connections = a.imap_connections;
        async move {
            let t = target?;
            stats::spawn_progress(format!("imap {t}"), "body", live.clone(), env.progress, t0);
            Some(imap::run(t, connections, imap_opts, accounts, env, live).await)
        }
    };
    let (smtp_out, pop3_out, imap_out) = tokio::join!(smtp_fut, pop3_fut, imap_fut);
    for l in &lives {
        l.stop.store(true, Ordering::Relaxed);
    }
    let measured_all = Instant::now().saturating_duration_since(t0);
    let meta = |mode: &'static str,
                target: &Option<String>,
                connections: u32,
                rate: Option<f64>| ReportMeta {
        mode,
        target: target.clone().unwrap_or_default(),
        run_id: env.run_id.clone(),
        started,
        connections: connections as u64,
        threads: env.threads as u64,
        warmup: Duration::from_secs_f64(a.warmup),
        rate,
        tls: env.tls_mode(),
    };
    let mut parts_json = serde_json::Map::new();
    let mut human = String::new();
    let mut stats_parts: Vec<(&str, Stats)> = Vec::new();
    if let Some(o) = smtp_out {
        if let Some(f) = o.fatal {
            return Err(f);
        }
        let r = Report::build(
            meta("smtp", &a.smtp_target, a.smtp_connections, a.rate),
            &o.stats,
            o.measured,
        );
        human.push_str(&r.human());
        parts_json.insert(
            "smtp".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
        stats_parts.push(("smtp.", o.stats));
    }
    if let Some((st, measured)) = pop3_out {
        let r = Report::build(
            meta("pop3", &a.pop3_target, a.pop3_connections, None),
            &st,
            measured,
        );
        human.push_str(&r.human());
        parts_json.insert(
            "pop3".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
        stats_parts.push(("pop3.", st));
    }
    if let Some(res) = imap_out {
        let (st, measured) = res?;
        let r = Report::build(
            meta("imap", &a.imap_target, a.imap_connections, None),
            &st,
            measured,
        );
        human.push_str(&r.human());
        parts_json.insert(
            "imap".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
        stats_parts.push(("imap.", st));
    }
    let json = serde_json::json!({
        "mode": "mixed",
        "run_id": env.run_id,
        "duration_s": (measured_all.as_secs_f64() * 1000.0).round() / 1000.0,
        "parts": parts_json,
    });
    let refs: Vec<(&str, &Stats)> = stats_parts.iter().map(|(p, s)| (*p, s)).collect();
    let measured = measured_all.saturating_sub(Duration::from_secs_f64(a.warmup));
    finish(
        &a.common,
        json,
        human,
        &refs,
        started,
        measured,
        "loadgen mixed",
    )?;
    Ok(ExitCode::SUCCESS)
}
