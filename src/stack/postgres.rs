//! A throwaway PostgreSQL cluster: `initdb` with the URL's role and password, `postgres` on a
//! loopback port, the URL's database created. As root, both run as the `postgres` OS user.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Service, Stack, StackError, User, log_tail, spawn};

/// Initialises and starts a cluster on `port` with its files under `root/postgres`.
pub(super) async fn start(
    stack: &mut Stack,
    bin: &Path,
    user: Option<User>,
    root: &Path,
    port: u16,
) -> Result<(), StackError> {
    let dir = root.join("postgres");
    std::fs::create_dir_all(&dir)?;
    if let Some(user) = user {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
    }
    let mut url = url::Url::parse(&stack.connections.postgres_url).map_err(|e| {
        stack.fail(
            Service::Postgres,
            format!("the Postgres URL does not parse: {e}"),
        )
    })?;
    let role = match url.username() {
        "" => "postgres".to_string(),
        name => name.to_string(),
    };
    let password = url.password().unwrap_or("").to_string();
    let database = url.path().trim_start_matches('/').to_string();
    let data = dir.join("data");
    // A long-lived cluster is initialised once; its next start finds it.
    if !data.join("PG_VERSION").exists() {
        initdb(stack, bin, user, &dir, &role, &password)?;
    }
    let log = dir.join("postgres.log");
    stack.start_process(
        Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "max_connections=200"]),
        &log,
        user,
        Service::Postgres,
        "postgres",
        port,
        libc::SIGINT,
    )?;
    url.set_port(Some(port)).expect("a postgres URL has a host");
    url.set_host(Some("127.0.0.1")).expect("valid host");
    let mut admin = url.clone();
    admin.set_path("/postgres");
    let admin = admin.to_string();
    stack
        .wait_ready(Service::Postgres, &log, Duration::from_secs(60), || {
            let admin = admin.clone();
            async move {
                use sqlx::Connection;
                sqlx::PgConnection::connect(&admin).await.is_ok()
            }
        })
        .await?;
    if !database.is_empty() && database != "postgres" {
        use sqlx::{Connection, Executor};
        let created = async {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            let exists: Option<i32> =
                sqlx::query_scalar("select 1 from pg_database where datname = $1")
                    .bind(&database)
                    .fetch_optional(&mut conn)
                    .await?;
            if exists.is_none() {
                let sql = format!("create database \"{}\"", database.replace('"', ""));
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
            }
            conn.close().await
        }
        .await;
        if let Err(error) = created {
            return Err(stack.fail(
                Service::Postgres,
                format!("cannot create database {database}: {error}"),
            ));
        }
    }
    stack.connections.postgres_url = url.to_string();
    Ok(())
}

/// `initdb` with the URL's role (a superuser) and password, password authentication only.
fn initdb(
    stack: &mut Stack,
    bin: &Path,
    user: Option<User>,
    dir: &Path,
    role: &str,
    password: &str,
) -> Result<(), StackError> {
    let password_file = dir.join("password");
    std::fs::write(&password_file, password)?;
    if let Some(user) = user {
        std::os::unix::fs::chown(&password_file, Some(user.uid), Some(user.gid))?;
    }
    let init_log = dir.join("initdb.log");
    let status = spawn(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                role,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", password_file.display())),
        &init_log,
        user,
        false,
    )?
    .wait()?;
    let _ = std::fs::remove_file(&password_file);
    if !status.success() {
        let cause = format!("initdb failed ({status}); {}", log_tail(&init_log));
        return Err(stack.fail(Service::Postgres, cause));
    }
    Ok(())
}
