//! The `eval` operator's response cache: one row per distinct request (target, model,
//! rendered prompt, parameters), keyed by its SHA-256, so an identical request is not paid for
//! twice.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EvalCache {
    Table,
    CacheKey,
    Response,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EvalCache::Table)
                    // Hex SHA-256 of the request.
                    .col(string(EvalCache::CacheKey).primary_key())
                    // The reply as JSON: text, token usage, latency.
                    .col(text(EvalCache::Response))
                    .col(timestamp_with_time_zone(EvalCache::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EvalCache::Table).to_owned())
            .await
    }
}
