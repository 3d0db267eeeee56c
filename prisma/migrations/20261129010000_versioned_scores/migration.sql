-- Scores move from "items" to "item_scores", one row per item and prototype version. A rescore
-- writes a whole new version beside the active one and readers switch with one update of
-- "datasets"."active_version": never a mix of versions, and no rewrite of item rows (which would
-- also rewrite their vector index entries).

-- DropIndex
DROP INDEX "items_dataset_id_score_idx";

-- AlterTable
ALTER TABLE "items" DROP COLUMN "cluster",
DROP COLUMN "prototype_version",
DROP COLUMN "score";

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "attempts" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN     "phase" TEXT;

-- AlterTable
ALTER TABLE "prototype_sets" ADD COLUMN     "items_since_fit" BIGINT NOT NULL DEFAULT 0,
ADD COLUMN     "revision" INTEGER NOT NULL DEFAULT 0;

-- "item_scores" and "ann_pending" have no foreign keys on purpose: they are written in bulk (a
-- million rows per rescore, a thousand per ingest batch) and per-row referential checks would
-- dominate that cost. The service deletes their rows explicitly with the items or dataset.

-- CreateTable
CREATE TABLE "item_scores" (
    "dataset_id" UUID NOT NULL,
    "version" INTEGER NOT NULL,
    "item_id" BIGINT NOT NULL,
    "score" REAL NOT NULL,
    "cluster" INTEGER NOT NULL,

    CONSTRAINT "item_scores_pkey" PRIMARY KEY ("dataset_id","item_id","version")
);

-- CreateTable
CREATE TABLE "item_ann" (
    "item_id" BIGINT NOT NULL,
    "dataset_id" UUID NOT NULL,
    "embedding" vector NOT NULL,

    CONSTRAINT "item_ann_pkey" PRIMARY KEY ("item_id")
);

-- CreateTable
CREATE TABLE "ann_pending" (
    "item_id" BIGINT NOT NULL,
    "dataset_id" UUID NOT NULL,

    CONSTRAINT "ann_pending_pkey" PRIMARY KEY ("item_id")
);

-- CreateIndex
CREATE INDEX "item_scores_dataset_id_version_score_idx" ON "item_scores"("dataset_id", "version", "score");

-- CreateIndex
CREATE INDEX "items_dataset_id_updated_at_idx" ON "items"("dataset_id", "updated_at");

-- CreateIndex
CREATE INDEX "ann_pending_dataset_id_idx" ON "ann_pending"("dataset_id");

-- AddForeignKey
ALTER TABLE "item_ann" ADD CONSTRAINT "item_ann_item_id_fkey" FOREIGN KEY ("item_id") REFERENCES "items"("id") ON DELETE CASCADE ON UPDATE CASCADE;


-- Keep rows of up to a page inline and uncompressed. pgvector stores vectors EXTERNAL, and with the
-- default 2 kB toast threshold every 512-d vector would go to the TOAST table: ingest, centroid
-- updates and bulk reads would touch heap + TOAST table + TOAST index for each row.
ALTER TABLE "items" SET (toast_tuple_target = 8160);
-- Centroid updates rewrite the current centroid only: it stays inline (MAIN) while the fitted
-- centroid, written once per fit, lives out of line, so an update copies a 2 kB row, not 4 kB.
-- Free space on each page lets updates be HOT (no index writes).
ALTER TABLE "prototypes" ALTER COLUMN "centroid" SET STORAGE MAIN;
ALTER TABLE "prototypes" SET (toast_tuple_target = 2560, fillfactor = 50);
