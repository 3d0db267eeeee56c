-- SemDeDup runs as a job ("dedup"): its parts (groups of clusters, claimable by any replica) read
-- one cluster of the pinned prototype version at a time, compare within it and write the
-- near-duplicate pairs they found here, in the fenced transaction that marks the part done. A run
-- is served once "completed_at" is set (with the job's success); "groups" and "duplicates" are its
-- totals then. A run's pairs go with the run, runs with their job and dataset.

-- CreateTable
CREATE TABLE "dedup_runs" (
    "job_id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "version" INTEGER NOT NULL,
    "epsilon" DOUBLE PRECISION NOT NULL,
    "groups" INTEGER,
    "duplicates" INTEGER,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "completed_at" TIMESTAMPTZ(3),

    CONSTRAINT "dedup_runs_pkey" PRIMARY KEY ("job_id")
);

-- CreateTable
CREATE TABLE "dedup_pairs" (
    "job_id" UUID NOT NULL,
    "duplicate_id" BIGINT NOT NULL,
    "kept_id" BIGINT NOT NULL,
    "similarity" REAL NOT NULL,

    CONSTRAINT "dedup_pairs_pkey" PRIMARY KEY ("job_id","duplicate_id")
);

-- CreateIndex
CREATE INDEX "dedup_runs_dataset_id_version_epsilon_idx" ON "dedup_runs"("dataset_id", "version", "epsilon");

-- CreateIndex
CREATE INDEX "dedup_pairs_job_id_kept_id_idx" ON "dedup_pairs"("job_id", "kept_id");

-- AddForeignKey
ALTER TABLE "dedup_runs" ADD CONSTRAINT "dedup_runs_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "dedup_runs" ADD CONSTRAINT "dedup_runs_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "dedup_pairs" ADD CONSTRAINT "dedup_pairs_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "dedup_runs"("job_id") ON DELETE CASCADE ON UPDATE CASCADE;
