import { requestDedup, streamDuplicates, type DedupRunView, type DuplicateGroupView } from '../../src/service/dedup.js';
import type { ServiceContext } from '../../src/service/context.js';
import { watchJob, type JobView } from '../../src/service/jobs.js';

/** Runs SemDeDup as a job through the service's worker, waits for it and reads every group of its run. */
export async function dedupNow(ctx: ServiceContext, dataset: string, epsilon?: number): Promise<{ job: JobView; run: DedupRunView; groups: DuplicateGroupView[] }> {
  const queued = await requestDedup(ctx, dataset, epsilon);
  let job = queued;
  for await (const view of watchJob(ctx.db, queued.id, 50)) job = view;
  if (job.state !== 'succeeded') throw new Error(`dedup job ${job.id} ended ${job.state}: ${job.error}`);
  const stream = await streamDuplicates(ctx, dataset, { jobId: job.id });
  const groups: DuplicateGroupView[] = [];
  for await (const chunk of stream.groups) groups.push(...chunk);
  return { job, run: stream.run, groups };
}
