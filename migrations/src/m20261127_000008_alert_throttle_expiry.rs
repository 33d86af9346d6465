//! When an `alert_throttle` row stops mattering: the end of its key's window, or the end of a
//! once-only marker's lifetime. Rows past it are pruned; the index keeps that a range scan.
//! Rows written before this column existed have none (see `store::alerts` for how those go).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AlertThrottle {
    Table,
    ExpiresAt,
}

const INDEX: &str = "alert_throttle_by_expiry";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AlertThrottle::Table)
                    .add_column(timestamp_with_time_zone_null(AlertThrottle::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(AlertThrottle::Table)
                    .col(AlertThrottle::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(AlertThrottle::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AlertThrottle::Table)
                    .drop_column(AlertThrottle::ExpiresAt)
                    .to_owned(),
            )
            .await
    }
}
