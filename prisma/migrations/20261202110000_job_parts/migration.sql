-- A job can be split into parts that any replica's worker claims: a refit's rescore, one part per
-- range of item ids. A part is leased like a job: claiming it increments "token" (its fencing
-- token) and sets "lease_expires_at"; its writes and the mark "done" commit in one transaction
-- that first checks and row-locks state = 'running' AND token = the claim's token, so a part whose
-- lease expired and was claimed again is written once. "result" is what the part reports back to
-- its job (e.g. per-cluster counts). Parts go with their job.

-- CreateTable
CREATE TABLE "job_parts" (
    "job_id" UUID NOT NULL,
    "part" INTEGER NOT NULL,
    "params" JSONB NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'queued',
    "token" INTEGER NOT NULL DEFAULT 0,
    "lease_expires_at" TIMESTAMPTZ(3),
    "result" JSONB,
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "job_parts_pkey" PRIMARY KEY ("job_id","part")
);

-- CreateIndex
CREATE INDEX "job_parts_open_idx" ON "job_parts"("job_id", "part") WHERE "state" <> 'done';

-- AddForeignKey
ALTER TABLE "job_parts" ADD CONSTRAINT "job_parts_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- A refit reads a dataset's embeddings in ranges of item ids (parts, and pages within them); the
-- primary key alone would also walk every other dataset's rows in those ranges.
-- CreateIndex
CREATE INDEX "items_dataset_id_id_idx" ON "items"("dataset_id", "id");
