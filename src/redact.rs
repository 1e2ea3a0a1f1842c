//! Passwords never reach logs, `result.json` or reports: every URL shown goes through here.

/// The URL with its password (and any `password=` query parameter) replaced by `***`.
/// Anything unparsable is hidden whole except its scheme, since it may hold a secret.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            let secret_query = parsed.query_pairs().any(|(k, _)| is_secret(&k));
            if secret_query {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret(&k) {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL (a bootstrap list such as "host:9092,host2:9092" has no userinfo to hide).
        Err(_) if !raw.contains('@') => raw.to_string(),
        // A multi-host URL (`redis-cluster://user:pw@h1:1,h2:2`): the hosts stay, the
        // credentials' secret part goes.
        Err(_) => match raw.split_once(":\u{2f}/") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, hosts)) if !hosts.contains('@') => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}:\u{2f}/{user}:***@{hosts}"),
                    None => format!("{scheme}:\u{2f}/***@{hosts}"),
                },
                _ => format!("{scheme}:\u{2f}/***"),
            },
            None => "***".to_string(),
        },
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key == "sslpassword"
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_cluster_url_keeps_its_hosts_and_hides_its_password() {
        assert_eq!(
            redact_url("redis-cluster://:pw@127.0.0.1:7000,127.0.0.1:7001"),
            "redis-cluster://:***@127.0.0.1:7000,127.0.0.1:7001"
        );
        assert_eq!(
            redact_url("redis-cluster://user:pw@a:1,b:2"),
            "redis-cluster://user:***@a:1,b:2"
        );
        assert!(!redact_url("redis-cluster://pw@a:1,b:2").contains("pw"));
    }

    #[test]
    fn hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://idembench:s3cret@db.example:5432/idembench"),
            "postgres://idembench:***@db.example:5432/idembench"
        );
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("127.0.0.1:9092,127.0.0.2:9092"),
            "127.0.0.1:9092,127.0.0.2:9092"
        );
        let redacted = redact_url("postgres://u@h/db?password=topsecret&sslmode=disable");
        assert!(
            !redacted.contains("topsecret") && redacted.contains("sslmode=disable"),
            "{redacted}"
        );
    }

    #[test]
    fn hides_unparsable_urls_with_credentials() {
        let redacted = redact_url("redis://user:pa ss@[bad");
        assert!(!redacted.contains("pa ss"), "{redacted}");
    }
}
