//! Failed UI logins, one row per failure, shared by every `serve` process on the database so
//! a lockout holds whichever process a login reaches. Rows older than the lockout window are
//! deleted whenever a failure is written.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Id,
    UserName,
    FailedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(big_pk_auto(LoginFailures::Id))
                    .col(string(LoginFailures::UserName))
                    .col(timestamp_with_time_zone(LoginFailures::FailedAt))
                    .to_owned(),
            )
            .await?;
        // A login reads one name's recent failures.
        manager
            .create_index(
                Index::create()
                    .name("login_failures_by_user")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::UserName)
                    .col(LoginFailures::FailedAt)
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by age across all names.
        manager
            .create_index(
                Index::create()
                    .name("login_failures_by_time")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::FailedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginFailures::Table).to_owned())
            .await
    }
}
