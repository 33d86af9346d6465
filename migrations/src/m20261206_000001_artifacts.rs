//! Artifacts: one row per file a try kept with its run (its blob lives in the artifact store,
//! addressed by `sha256`). Rows are written in the same transaction as the try's completion.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Artifacts {
    Table,
    Id,
    RunId,
    TaskId,
    TryNumber,
    Name,
    Size,
    Sha256,
    MediaType,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Artifacts::Table)
                    .col(big_pk_auto(Artifacts::Id))
                    .col(string(Artifacts::RunId))
                    .col(string(Artifacts::TaskId))
                    .col(integer(Artifacts::TryNumber))
                    .col(text(Artifacts::Name))
                    .col(big_integer(Artifacts::Size))
                    .col(string(Artifacts::Sha256))
                    .col(string(Artifacts::MediaType))
                    .col(timestamp_with_time_zone(Artifacts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // A try keeps a name once; pages and templates read a run's artifacts by task.
        manager
            .create_index(
                Index::create()
                    .name("artifacts_by_try")
                    .table(Artifacts::Table)
                    .col(Artifacts::RunId)
                    .col(Artifacts::TaskId)
                    .col(Artifacts::TryNumber)
                    .col(Artifacts::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Retention asks whether a blob is still referenced.
        manager
            .create_index(
                Index::create()
                    .name("artifacts_by_digest")
                    .table(Artifacts::Table)
                    .col(Artifacts::Sha256)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Artifacts::Table).to_owned())
            .await
    }
}
