-- Jobs are leased. Claiming a job sets "lease_expires_at" and its worker's heartbeat extends it;
-- only a job whose lease expired goes back to the queue. The job's "attempts" at claim time is its
-- fencing token: every write of a run first checks (and row-locks) state = 'running' AND attempts
-- = token, so a worker whose job was taken over cannot write anymore. Running jobs claimed before
-- this migration have no lease; they are judged by "updated_at" as before.
-- A job that hit a transient database error is queued again with "run_after" (exponential backoff);
-- "retries" counts those retries.

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "lease_expires_at" TIMESTAMPTZ(3),
ADD COLUMN     "retries" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN     "run_after" TIMESTAMPTZ(3);
