-- Embeddings inline in their row instead of in the TOAST table. pgvector declares `vector` with
-- STORAGE EXTERNAL, so every vector above ~500 dimensions (a row over ~2 kB) was moved out of line:
-- reading one candidate's embedding (the exact scan of not-yet-indexed items a near-duplicate
-- lookup makes, the halfvec re-rank, a refit's read) cost a TOAST index probe and two more page
-- reads. MAIN keeps a vector in its row while the row fits a page (up to ~2,000 dimensions) and
-- still moves larger ones out of line. PostgreSQL only tries compression first, which float data
-- does not pass. Metadata only: rows already written keep their layout until rewritten.

ALTER TABLE "items" ALTER COLUMN "embedding" SET STORAGE MAIN;
ALTER TABLE "item_ann" ALTER COLUMN "embedding" SET STORAGE MAIN;
