//! What several processes on one database need: a unique key that lets only one scheduled run
//! exist per workflow and logical date (whichever scheduler creates it first wins), and the
//! queue each task instance waits in, so workers take only the queues they serve.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    WorkflowId,
    ScheduledFor,
}

#[derive(DeriveIden)]
enum TaskInstances {
    Table,
    Queue,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(timestamp_with_time_zone_null(Runs::ScheduledFor))
                    .to_owned(),
            )
            .await?;
        // Existing scheduled runs keep their place; should two exist for one logical date, the
        // oldest holds the key.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE runs SET scheduled_for = logical_date WHERE trigger = 'schedule' \
                 AND id = (SELECT MIN(r.id) FROM runs r WHERE r.workflow_id = runs.workflow_id \
                 AND r.logical_date = runs.logical_date AND r.trigger = 'schedule')",
            )
            .await?;
        // NULLs are distinct in both databases, so only scheduled runs are constrained.
        manager
            .create_index(
                Index::create()
                    .name("runs_one_per_schedule")
                    .table(Runs::Table)
                    .col(Runs::WorkflowId)
                    .col(Runs::ScheduledFor)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .add_column(string(TaskInstances::Queue).default("default"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .drop_column(TaskInstances::Queue)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("runs_one_per_schedule")
                    .table(Runs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::ScheduledFor)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
