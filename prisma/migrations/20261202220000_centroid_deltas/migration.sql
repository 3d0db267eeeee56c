-- Ingest no longer folds each batch into the centroids under the dataset's lock: a batch appends
-- its centroid delta here (per touched centroid: the sum of the batch's unit vectors assigned to
-- it and their count) in the transaction that stores its items, and one folder per dataset (under
-- an advisory lock) applies the deltas of the active set in id order to the set's row and deletes
-- them. A delta commits with its items, so a crash between the two loses nothing. Deltas go with
-- their prototype set and dataset.

-- CreateTable
CREATE TABLE "centroid_deltas" (
    "id" BIGSERIAL NOT NULL,
    "dataset_id" UUID NOT NULL,
    "set_id" BIGINT NOT NULL,
    "items" INTEGER NOT NULL,
    "clusters" INTEGER[] NOT NULL,
    "counts" INTEGER[] NOT NULL,
    "sums" BYTEA NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "centroid_deltas_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "centroid_deltas_set_id_id_idx" ON "centroid_deltas"("set_id", "id");

-- CreateIndex
CREATE INDEX "centroid_deltas_dataset_id_idx" ON "centroid_deltas"("dataset_id");

-- AddForeignKey
ALTER TABLE "centroid_deltas" ADD CONSTRAINT "centroid_deltas_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "centroid_deltas" ADD CONSTRAINT "centroid_deltas_set_id_fkey" FOREIGN KEY ("set_id") REFERENCES "prototype_sets"("id") ON DELETE CASCADE ON UPDATE CASCADE;
