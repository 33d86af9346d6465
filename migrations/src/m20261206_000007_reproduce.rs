//! A run started to reproduce a tracking run records what it reproduces: the original
//! workflow run and tracking run, as JSON (`{"run_id", "tracking_run_id"}`), null for every
//! other run. The run page compares the two runs' lineage from it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Reproduces,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(text_null(Runs::Reproduces))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::Reproduces)
                    .to_owned(),
            )
            .await
    }
}
