-- SemDeDup across cluster boundaries. A near-duplicate of an item can land in the neighbouring
-- cluster; the first stage of a dedup run (within clusters) records, for each item it keeps whose
-- second-nearest prototype is almost as near as its own, that neighbour here. The second stage
-- compares each cluster's kept items with the boundary items aimed at it. Rows go with their run.

-- CreateTable
CREATE TABLE "dedup_boundary" (
    "job_id" UUID NOT NULL,
    "cluster" INTEGER NOT NULL,
    "item_id" BIGINT NOT NULL,

    CONSTRAINT "dedup_boundary_pkey" PRIMARY KEY ("job_id","cluster","item_id")
);

-- AddForeignKey
ALTER TABLE "dedup_boundary" ADD CONSTRAINT "dedup_boundary_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "dedup_runs"("job_id") ON DELETE CASCADE ON UPDATE CASCADE;
