//! The initial schema: workflows and their versions, runs, task instances (one row per try)
//! and task logs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    Paused,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowVersions {
    Table,
    Hash,
    WorkflowId,
    Path,
    Source,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    WorkflowId,
    VersionHash,
    State,
    Trigger,
    TriggeredBy,
    Params,
    LogicalDate,
    DataIntervalStart,
    DataIntervalEnd,
    Error,
    CreatedAt,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum TaskInstances {
    Table,
    Id,
    RunId,
    TaskId,
    TryNumber,
    State,
    Priority,
    Pool,
    NotBefore,
    Worker,
    LeaseExpiresAt,
    ExitCode,
    Error,
    Outputs,
    CreatedAt,
    QueuedAt,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum TaskLogs {
    Table,
    Id,
    RunId,
    TaskId,
    TryNumber,
    Stream,
    Line,
    LoggedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .col(string(Workflows::Id).primary_key())
                    .col(boolean(Workflows::Paused).default(false))
                    .col(timestamp_with_time_zone(Workflows::CreatedAt))
                    .col(timestamp_with_time_zone(Workflows::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkflowVersions::Table)
                    .col(string(WorkflowVersions::Hash).primary_key())
                    .col(string(WorkflowVersions::WorkflowId))
                    .col(string(WorkflowVersions::Path))
                    .col(text(WorkflowVersions::Source))
                    .col(timestamp_with_time_zone(WorkflowVersions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(string(Runs::Id).primary_key())
                    .col(string(Runs::WorkflowId))
                    .col(string(Runs::VersionHash))
                    .col(string(Runs::State))
                    .col(string(Runs::Trigger))
                    .col(string_null(Runs::TriggeredBy))
                    .col(text(Runs::Params))
                    .col(timestamp_with_time_zone(Runs::LogicalDate))
                    .col(timestamp_with_time_zone(Runs::DataIntervalStart))
                    .col(timestamp_with_time_zone(Runs::DataIntervalEnd))
                    .col(text_null(Runs::Error))
                    .col(timestamp_with_time_zone(Runs::CreatedAt))
                    .col(timestamp_with_time_zone_null(Runs::StartedAt))
                    .col(timestamp_with_time_zone_null(Runs::EndedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_by_workflow")
                    .table(Runs::Table)
                    .col(Runs::WorkflowId)
                    .col(Runs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_by_state")
                    .table(Runs::Table)
                    .col(Runs::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskInstances::Table)
                    .col(big_pk_auto(TaskInstances::Id))
                    .col(string(TaskInstances::RunId))
                    .col(string(TaskInstances::TaskId))
                    .col(integer(TaskInstances::TryNumber))
                    .col(string(TaskInstances::State))
                    .col(integer(TaskInstances::Priority).default(0))
                    .col(string_null(TaskInstances::Pool))
                    .col(timestamp_with_time_zone_null(TaskInstances::NotBefore))
                    .col(string_null(TaskInstances::Worker))
                    .col(timestamp_with_time_zone_null(TaskInstances::LeaseExpiresAt))
                    .col(integer_null(TaskInstances::ExitCode))
                    .col(text_null(TaskInstances::Error))
                    .col(text_null(TaskInstances::Outputs))
                    .col(timestamp_with_time_zone(TaskInstances::CreatedAt))
                    .col(timestamp_with_time_zone_null(TaskInstances::QueuedAt))
                    .col(timestamp_with_time_zone_null(TaskInstances::StartedAt))
                    .col(timestamp_with_time_zone_null(TaskInstances::EndedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_instances_try")
                    .table(TaskInstances::Table)
                    .col(TaskInstances::RunId)
                    .col(TaskInstances::TaskId)
                    .col(TaskInstances::TryNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Workers claim queued rows by priority, then age: the index matches that order, so a
        // claim reads only the rows it takes however long the queue is.
        manager
            .create_index(
                Index::create()
                    .name("task_instances_claim")
                    .table(TaskInstances::Table)
                    .col(TaskInstances::State)
                    .col((TaskInstances::Priority, IndexOrder::Desc))
                    .col(TaskInstances::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskLogs::Table)
                    .col(big_pk_auto(TaskLogs::Id))
                    .col(string(TaskLogs::RunId))
                    .col(string(TaskLogs::TaskId))
                    .col(integer(TaskLogs::TryNumber))
                    .col(string(TaskLogs::Stream))
                    .col(text(TaskLogs::Line))
                    .col(timestamp_with_time_zone(TaskLogs::LoggedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_logs_by_try")
                    .table(TaskLogs::Table)
                    .col(TaskLogs::RunId)
                    .col(TaskLogs::TaskId)
                    .col(TaskLogs::TryNumber)
                    .col(TaskLogs::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "task_logs",
            "task_instances",
            "runs",
            "workflow_versions",
            "workflows",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
