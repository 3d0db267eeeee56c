-- Per-cluster selections (hardest/easiest with balance=cluster) find each cluster's quota boundary
-- and count its items with index-only range scans of this index, then read each cluster's kept
-- items in score order from it.

-- CreateIndex
CREATE INDEX "item_scores_dataset_id_version_cluster_score_idx" ON "item_scores"("dataset_id", "version", "cluster", "score");
