-- The current (incrementally updated) centroids and counts of a prototype set move into two bytea
-- columns of prototype_sets, in PostgreSQL's binary send format (big-endian float4 per value, k × d;
-- big-endian int8 per count): a mini-batch update rewrites one row instead of one row per touched
-- centroid. prototypes keeps the centroids as fitted (the drift reference).

-- AlterTable
ALTER TABLE "prototype_sets" ADD COLUMN     "centroids" BYTEA,
ADD COLUMN     "counts" BYTEA;

-- Existing sets: carry their current state over.
UPDATE "prototype_sets" s
   SET "centroids" = p.centroids, "counts" = p.counts
  FROM (SELECT "set_id",
               string_agg(substring(vector_send("centroid") FROM 5), ''::bytea ORDER BY "cluster") AS centroids,
               string_agg(int8send("count"), ''::bytea ORDER BY "cluster") AS counts
          FROM "prototypes" GROUP BY "set_id") p
 WHERE p."set_id" = s."id";

ALTER TABLE "prototype_sets" ALTER COLUMN "centroids" SET NOT NULL,
ALTER COLUMN "counts" SET NOT NULL;

-- Float data does not compress: skip the attempt.
ALTER TABLE "prototype_sets" ALTER COLUMN "centroids" SET STORAGE EXTERNAL,
ALTER COLUMN "counts" SET STORAGE EXTERNAL;

-- AlterTable
ALTER TABLE "prototypes" DROP COLUMN "centroid",
DROP COLUMN "count";

ALTER TABLE "prototypes" RESET (toast_tuple_target, fillfactor);
