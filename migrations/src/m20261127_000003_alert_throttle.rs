//! Alert dedup and throttle state: one row per alert key, shared by every process on the
//! database, so a window holds across processes and restarts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AlertThrottle {
    Table,
    Key,
    LastSentAt,
    Suppressed,
    Version,
    Claim,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AlertThrottle::Table)
                    .col(string(AlertThrottle::Key).primary_key())
                    // Null while no alert under this key has gone out (or the last one failed).
                    .col(timestamp_with_time_zone_null(AlertThrottle::LastSentAt))
                    // Alerts held back since the last one that went out.
                    .col(big_integer(AlertThrottle::Suppressed).default(0))
                    // Bumped on every write: writers guard on the version they read.
                    .col(big_integer(AlertThrottle::Version).default(0))
                    // Who sent the last alert, so a failed send gives its slot back.
                    .col(string_null(AlertThrottle::Claim))
                    .col(timestamp_with_time_zone(AlertThrottle::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AlertThrottle::Table).to_owned())
            .await
    }
}
