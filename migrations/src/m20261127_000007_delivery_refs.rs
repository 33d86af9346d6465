//! What the deliveries page shows of a delivery besides its event: the branch or tag and the
//! commit it concerns. Null for deliveries recorded before, and for events without them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GithubDeliveries {
    Table,
    Branch,
    Tag,
    Sha,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE statement.
        for column in [
            GithubDeliveries::Branch,
            GithubDeliveries::Tag,
            GithubDeliveries::Sha,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(GithubDeliveries::Table)
                        .add_column(string_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            GithubDeliveries::Sha,
            GithubDeliveries::Tag,
            GithubDeliveries::Branch,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(GithubDeliveries::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
