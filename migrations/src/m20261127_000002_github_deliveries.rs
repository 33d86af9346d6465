//! GitHub webhook deliveries (one row per `X-GitHub-Delivery` id, whose uniqueness is what
//! makes a redelivery start nothing new), and what a run records of the trigger that started
//! it: the facts (`trigger_details`, JSON) and the payload templates read as `event`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GithubDeliveries {
    Table,
    Id,
    Event,
    Action,
    Repository,
    Sender,
    Outcome,
    Reason,
    RunIds,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    TriggerDetails,
    Event,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(GithubDeliveries::Table)
                    .col(string(GithubDeliveries::Id).primary_key())
                    .col(string(GithubDeliveries::Event))
                    .col(string_null(GithubDeliveries::Action))
                    .col(string_null(GithubDeliveries::Repository))
                    .col(string_null(GithubDeliveries::Sender))
                    .col(string(GithubDeliveries::Outcome))
                    .col(text_null(GithubDeliveries::Reason))
                    .col(text(GithubDeliveries::RunIds))
                    .col(timestamp_with_time_zone(GithubDeliveries::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        // The deliveries page lists the newest first.
        manager
            .create_index(
                Index::create()
                    .name("github_deliveries_by_time")
                    .table(GithubDeliveries::Table)
                    .col(GithubDeliveries::ReceivedAt)
                    .col(GithubDeliveries::Id)
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(text_null(Runs::TriggerDetails))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(text_null(Runs::Event))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Runs::Event, Runs::TriggerDetails] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Runs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(GithubDeliveries::Table).to_owned())
            .await?;
        Ok(())
    }
}
