-- Metadata filters (`metadata @> {…}`) on selections, exports, statistics and score decisions
-- find the matching items through this index (jsonb_path_ops: containment only, and smaller than
-- the default operator class). A stored selection keeps what its first page reported beyond the
-- counts (how many items matched the filter), so every later page reports the same.

-- CreateIndex
CREATE INDEX "items_metadata_idx" ON "items" USING GIN ("metadata" jsonb_path_ops);

-- AlterTable
ALTER TABLE "selections" ADD COLUMN "summary" JSONB NOT NULL DEFAULT '{}';
