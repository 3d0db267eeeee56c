-- A pending item (stored or changed since the HNSW index last caught up) carries its cluster under
-- a prototype version, so a near-duplicate lookup scans exactly only the pending items of the
-- query's nearest clusters — at most the newest few of each, read backwards along the index —
-- instead of every pending item of the dataset. Rows of another version (or none: stored before
-- the first fit) are still scanned in full; a version switch relabels them.

-- AlterTable
ALTER TABLE "ann_pending" ADD COLUMN     "cluster" INTEGER,
ADD COLUMN     "version" INTEGER;

-- Existing rows: their cluster under the dataset's active version, where they have a score.
UPDATE "ann_pending" p
   SET "version" = d."active_version", "cluster" = s."cluster"
  FROM "datasets" d, "item_scores" s
 WHERE d."id" = p."dataset_id" AND s."dataset_id" = p."dataset_id" AND s."item_id" = p."item_id" AND s."version" = d."active_version";

-- DropIndex
DROP INDEX "ann_pending_dataset_id_idx";

-- CreateIndex
CREATE INDEX "ann_pending_dataset_id_version_cluster_item_id_idx" ON "ann_pending"("dataset_id", "version", "cluster", "item_id");
