//! The latest point of a metric, which searches sort and filter tracking runs by, is the one
//! with the highest step, then the latest time, then the last logged: one index in that whole
//! order lets the database walk to it without sorting each run's points. It also serves
//! histories in step order, so it replaces the index on (run, key, step).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TrackingMetrics {
    Table,
    Id,
    TrackingRunId,
    Key,
    Step,
    TimestampMs,
}

const LATEST: &str = "tracking_metrics_latest";
const HISTORY: &str = "tracking_metrics_history";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(LATEST)
                    .table(TrackingMetrics::Table)
                    .col(TrackingMetrics::TrackingRunId)
                    .col(TrackingMetrics::Key)
                    .col(TrackingMetrics::Step)
                    .col(TrackingMetrics::TimestampMs)
                    .col(TrackingMetrics::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(HISTORY)
                    .table(TrackingMetrics::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(HISTORY)
                    .table(TrackingMetrics::Table)
                    .col(TrackingMetrics::TrackingRunId)
                    .col(TrackingMetrics::Key)
                    .col(TrackingMetrics::Step)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(LATEST)
                    .table(TrackingMetrics::Table)
                    .to_owned(),
            )
            .await
    }
}
