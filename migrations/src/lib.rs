//! Database schema migrations for Sluice, one file per schema change. The same files apply to
//! SQLite and PostgreSQL: they are written with sea-query's schema builder, never raw DDL.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_initial;
mod m20261127_000002_github_deliveries;
mod m20261127_000003_alert_throttle;
mod m20261127_000004_multi_node;
mod m20261127_000005_users;
mod m20261127_000006_login_failures;
mod m20261127_000007_delivery_refs;
mod m20261127_000008_alert_throttle_expiry;
mod m20261206_000001_artifacts;
mod m20261206_000001_rerun_start;
mod m20261206_000002_outcomes;
mod m20261206_000003_tracking;
mod m20261206_000004_eval_cache;
mod m20261206_000006_rollouts;
mod m20261206_000007_reproduce;
mod m20261206_000008_tracking_search;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_initial::Migration),
            Box::new(m20261127_000002_github_deliveries::Migration),
            Box::new(m20261127_000003_alert_throttle::Migration),
            Box::new(m20261127_000004_multi_node::Migration),
            Box::new(m20261127_000005_users::Migration),
            Box::new(m20261127_000006_login_failures::Migration),
            Box::new(m20261127_000007_delivery_refs::Migration),
            Box::new(m20261127_000008_alert_throttle_expiry::Migration),
            Box::new(m20261206_000001_rerun_start::Migration),
            Box::new(m20261206_000001_artifacts::Migration),
            Box::new(m20261206_000002_outcomes::Migration),
            Box::new(m20261206_000003_tracking::Migration),
            Box::new(m20261206_000004_eval_cache::Migration),
            Box::new(m20261206_000006_rollouts::Migration),
            Box::new(m20261206_000007_reproduce::Migration),
            Box::new(m20261206_000008_tracking_search::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "sluice_migrations".into_iden()
    }
}
