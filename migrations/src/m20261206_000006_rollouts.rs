//! Rollouts of the `deploy` operator: one row per deploy task of a run, holding where the
//! rollout stands (step, routing, phase, checks) so that any later try resumes it, and the
//! history the routing endpoint and the registry read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Rollouts {
    Table,
    Id,
    RunId,
    TaskId,
    TryNumber,
    Model,
    Version,
    PreviousVersion,
    Alias,
    Strategy,
    Step,
    State,
    Routing,
    Detail,
    Checks,
    RollbackReason,
    StartedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rollouts::Table)
                    .col(big_pk_auto(Rollouts::Id))
                    .col(string(Rollouts::RunId))
                    .col(string(Rollouts::TaskId))
                    .col(integer(Rollouts::TryNumber))
                    .col(string(Rollouts::Model))
                    .col(string(Rollouts::Version))
                    .col(string_null(Rollouts::PreviousVersion))
                    .col(string(Rollouts::Alias))
                    .col(string(Rollouts::Strategy))
                    .col(integer(Rollouts::Step))
                    .col(string(Rollouts::State))
                    .col(text(Rollouts::Routing))
                    .col(text(Rollouts::Detail))
                    .col(text(Rollouts::Checks))
                    .col(text_null(Rollouts::RollbackReason))
                    .col(timestamp_with_time_zone(Rollouts::StartedAt))
                    .col(timestamp_with_time_zone(Rollouts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // A try finds its task's rollout; one rollout per task of a run.
        manager
            .create_index(
                Index::create()
                    .name("rollouts_by_task")
                    .table(Rollouts::Table)
                    .col(Rollouts::RunId)
                    .col(Rollouts::TaskId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The routing endpoint and alias lookups read a model's newest rollouts.
        manager
            .create_index(
                Index::create()
                    .name("rollouts_by_model")
                    .table(Rollouts::Table)
                    .col(Rollouts::Model)
                    .col(Rollouts::UpdatedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Rollouts::Table).to_owned())
            .await
    }
}
