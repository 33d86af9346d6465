//! Experiment tracking and the model registry of the built-in tracking backend: experiments,
//! tracking runs (with the workflow run, task and try that made them, and the hashes of their
//! input files), params, every metric point, tags, files, registered models, their versions
//! (source files kept content-addressed in the artifact store), aliases and every alias move.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TrackingExperiments {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TrackingRuns {
    Table,
    Id,
    ExperimentId,
    Name,
    Status,
    WorkflowId,
    VersionHash,
    RunId,
    TaskId,
    TryNumber,
    Inputs,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum TrackingParams {
    Table,
    TrackingRunId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum TrackingTags {
    Table,
    TrackingRunId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum TrackingMetrics {
    Table,
    Id,
    TrackingRunId,
    Key,
    Value,
    Step,
    TimestampMs,
}

#[derive(DeriveIden)]
enum TrackingFiles {
    Table,
    TrackingRunId,
    Name,
    Sha256,
    Size,
}

#[derive(DeriveIden)]
enum RegisteredModels {
    Table,
    Name,
    Description,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ModelVersions {
    Table,
    Model,
    Version,
    TrackingRunId,
    Description,
    Tags,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ModelVersionFiles {
    Table,
    Model,
    Version,
    Path,
    Sha256,
    Size,
}

#[derive(DeriveIden)]
enum ModelAliases {
    Table,
    Model,
    Alias,
    Version,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AliasHistory {
    Table,
    Id,
    Model,
    Alias,
    FromVersion,
    ToVersion,
    MovedAt,
    MovedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrackingExperiments::Table)
                    .col(string(TrackingExperiments::Id).primary_key())
                    .col(string(TrackingExperiments::Name).unique_key())
                    .col(timestamp_with_time_zone(TrackingExperiments::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TrackingRuns::Table)
                    .col(string(TrackingRuns::Id).primary_key())
                    .col(string(TrackingRuns::ExperimentId))
                    .col(string(TrackingRuns::Name))
                    .col(string(TrackingRuns::Status))
                    .col(string_null(TrackingRuns::WorkflowId))
                    .col(string_null(TrackingRuns::VersionHash))
                    .col(string_null(TrackingRuns::RunId))
                    .col(string_null(TrackingRuns::TaskId))
                    .col(integer_null(TrackingRuns::TryNumber))
                    .col(text(TrackingRuns::Inputs))
                    .col(timestamp_with_time_zone(TrackingRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(TrackingRuns::EndedAt))
                    .to_owned(),
            )
            .await?;
        // An experiment's page lists its runs, newest first.
        manager
            .create_index(
                Index::create()
                    .name("tracking_runs_by_experiment")
                    .table(TrackingRuns::Table)
                    .col(TrackingRuns::ExperimentId)
                    .col(TrackingRuns::StartedAt)
                    .to_owned(),
            )
            .await?;
        // A workflow run's page links to the tracking runs its tasks made.
        manager
            .create_index(
                Index::create()
                    .name("tracking_runs_by_run")
                    .table(TrackingRuns::Table)
                    .col(TrackingRuns::RunId)
                    .to_owned(),
            )
            .await?;
        for (table, run, key, value, name) in [
            (
                TrackingParams::Table.into_iden(),
                TrackingParams::TrackingRunId.into_iden(),
                TrackingParams::Key.into_iden(),
                TrackingParams::Value.into_iden(),
                "tracking_params_key",
            ),
            (
                TrackingTags::Table.into_iden(),
                TrackingTags::TrackingRunId.into_iden(),
                TrackingTags::Key.into_iden(),
                TrackingTags::Value.into_iden(),
                "tracking_tags_key",
            ),
        ] {
            manager
                .create_table(
                    Table::create()
                        .table(table.clone())
                        .col(string(run.clone()))
                        .col(string(key.clone()))
                        .col(text(value))
                        .to_owned(),
                )
                .await?;
            // A key has one value per run; logging it again replaces it.
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(run)
                        .col(key)
                        .unique()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(TrackingMetrics::Table)
                    .col(big_pk_auto(TrackingMetrics::Id))
                    .col(string(TrackingMetrics::TrackingRunId))
                    .col(string(TrackingMetrics::Key))
                    .col(double(TrackingMetrics::Value))
                    .col(big_integer(TrackingMetrics::Step))
                    .col(big_integer(TrackingMetrics::TimestampMs))
                    .to_owned(),
            )
            .await?;
        // Histories are read per run and key, in step order.
        manager
            .create_index(
                Index::create()
                    .name("tracking_metrics_history")
                    .table(TrackingMetrics::Table)
                    .col(TrackingMetrics::TrackingRunId)
                    .col(TrackingMetrics::Key)
                    .col(TrackingMetrics::Step)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TrackingFiles::Table)
                    .col(string(TrackingFiles::TrackingRunId))
                    .col(text(TrackingFiles::Name))
                    .col(string(TrackingFiles::Sha256))
                    .col(big_integer(TrackingFiles::Size))
                    .primary_key(
                        Index::create()
                            .col(TrackingFiles::TrackingRunId)
                            .col(TrackingFiles::Name),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RegisteredModels::Table)
                    .col(string(RegisteredModels::Name).primary_key())
                    .col(text(RegisteredModels::Description))
                    .col(timestamp_with_time_zone(RegisteredModels::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelVersions::Table)
                    .col(string(ModelVersions::Model))
                    .col(integer(ModelVersions::Version))
                    .col(string_null(ModelVersions::TrackingRunId))
                    .col(text(ModelVersions::Description))
                    .col(text(ModelVersions::Tags))
                    .col(timestamp_with_time_zone(ModelVersions::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ModelVersions::Model)
                            .col(ModelVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelVersionFiles::Table)
                    .col(string(ModelVersionFiles::Model))
                    .col(integer(ModelVersionFiles::Version))
                    .col(text(ModelVersionFiles::Path))
                    .col(string(ModelVersionFiles::Sha256))
                    .col(big_integer(ModelVersionFiles::Size))
                    .primary_key(
                        Index::create()
                            .col(ModelVersionFiles::Model)
                            .col(ModelVersionFiles::Version)
                            .col(ModelVersionFiles::Path),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelAliases::Table)
                    .col(string(ModelAliases::Model))
                    .col(string(ModelAliases::Alias))
                    .col(integer(ModelAliases::Version))
                    .col(timestamp_with_time_zone(ModelAliases::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ModelAliases::Model)
                            .col(ModelAliases::Alias),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AliasHistory::Table)
                    .col(big_pk_auto(AliasHistory::Id))
                    .col(string(AliasHistory::Model))
                    .col(string(AliasHistory::Alias))
                    .col(integer_null(AliasHistory::FromVersion))
                    .col(integer_null(AliasHistory::ToVersion))
                    .col(timestamp_with_time_zone(AliasHistory::MovedAt))
                    .col(string(AliasHistory::MovedBy))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("alias_history_by_model")
                    .table(AliasHistory::Table)
                    .col(AliasHistory::Model)
                    .col(AliasHistory::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AliasHistory::Table.into_iden(),
            ModelAliases::Table.into_iden(),
            ModelVersionFiles::Table.into_iden(),
            ModelVersions::Table.into_iden(),
            RegisteredModels::Table.into_iden(),
            TrackingFiles::Table.into_iden(),
            TrackingMetrics::Table.into_iden(),
            TrackingTags::Table.into_iden(),
            TrackingParams::Table.into_iden(),
            TrackingRuns::Table.into_iden(),
            TrackingExperiments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
