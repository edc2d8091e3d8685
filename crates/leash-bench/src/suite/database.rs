//! The suite's database figures: issuance and mass expiry against raw PostgreSQL.

use super::{Goal, Plan, SuiteArgs, SuiteRow};
use crate::bench_leases::{self, Phase};

// ---------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------

pub(super) async fn database_part(args: &SuiteArgs, plan: &Plan) -> Vec<SuiteRow> {
    eprintln!(
        "database: {} credentials (raw and through leash), {} expiring together",
        plan.issue, plan.expire
    );
    let a = bench_leases::BenchLeasesArgs::for_suite(
        args.postgres.clone(),
        plan.issue,
        plan.expire,
        1,
        vec![Phase::Raw, Phase::Issue, Phase::Expire],
    );
    let found = match bench_leases::collect(&a).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("database: not measured: {}", bench_leases::error_text(e));
            Vec::new()
        }
    };
    let rate = |prefix: &str| {
        found
            .iter()
            .find(|r| r.name.starts_with(prefix))
            .and_then(|r| r.rate)
    };
    vec![
        SuiteRow {
            figure: format!(
                "database issuance, scram 4096, vs raw PostgreSQL ({} creds/s)",
                plan.issue
            ),
            value: rate("leash issue, scram 4096"),
            baseline: rate("raw create, scram 4096"),
            goal: Goal::RatioAtLeast(0.9),
            unit: "",
        },
        SuiteRow {
            figure: format!(
                "mass expiry of {} group-role creds vs batched DROP ROLE (/s)",
                plan.expire
            ),
            value: rate("expire "),
            baseline: rate("raw drop "),
            goal: Goal::RatioAtLeast(0.8),
            unit: "",
        },
    ]
}
