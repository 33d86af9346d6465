//! A try says more than success or failure: `warnings` (a JSON list of sentences about a
//! success that still needs a look) and `summary` (one line of what it found, or why it was
//! rejected), shown on the run page, returned by the API and used for commit statuses.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TaskInstances {
    Table,
    Warnings,
    Summary,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .add_column(text_null(TaskInstances::Warnings))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskInstances::Table)
                    .add_column(text_null(TaskInstances::Summary))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [TaskInstances::Summary, TaskInstances::Warnings] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TaskInstances::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
