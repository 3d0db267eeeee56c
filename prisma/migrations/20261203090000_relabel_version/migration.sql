-- A version switch no longer relabels every pending (not yet HNSW-indexed) item inside its
-- transaction, which held the dataset lock exclusively for minutes on a large backlog (all of a
-- bulk load's items). The refit relabels them afterwards in short batches; meanwhile
-- near-duplicate lookups also probe the clusters of the version they may still carry, recorded
-- here (null when no relabel is under way).

-- AlterTable
ALTER TABLE "datasets" ADD COLUMN "relabel_version" INTEGER;
