//! Clearing tasks of an ended run runs it again: the run keeps its first `started_at` and
//! records when it started again in `rerun_started_at`; a try created by clearing its task
//! records when in `cleared_at`, which is where its task's retries count from again.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    RerunStartedAt,
}

#[derive(DeriveIden)]
enum TaskInstances {
    Table,
    ClearedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(timestamp_with_time_zone_null(Runs::RerunStartedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .add_column(timestamp_with_time_zone_null(TaskInstances::ClearedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .drop_column(TaskInstances::ClearedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::RerunStartedAt)
                    .to_owned(),
            )
            .await
    }
}
