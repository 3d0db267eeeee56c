import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { percentileOf, scoresFromSimilarity, sortScores } from '../../src/core/scores.js';

describe('scores', () => {
  it('is the cosine distance to the nearest centroid, never negative', () => {
    const scores = scoresFromSimilarity(new Float32Array([1, 0.75, 0, -1, 1.0000001]));
    expect(Array.from(scores)).toEqual([0, 0.25, 1, 2, 0]);
  });

  it('percentileOf is the fraction of dataset scores at or below the score', () => {
    const sorted = sortScores(new Float32Array([0.4, 0.1, 0.3, 0.3, 0.2]));
    expect(Array.from(sorted)).toEqual(Array.from(new Float32Array([0.1, 0.2, 0.3, 0.3, 0.4])));
    expect(percentileOf(sorted, 0.05)).toBe(0);
    expect(percentileOf(sorted, Math.fround(0.1))).toBe(0.2);
    expect(percentileOf(sorted, Math.fround(0.3))).toBe(0.8);
    expect(percentileOf(sorted, 0.35)).toBe(0.8);
    expect(percentileOf(sorted, 5)).toBe(1);
    expect(percentileOf(new Float32Array(0), 0.5)).toBe(0);
  });

  it('percentileOf matches a brute-force count, equal scores sharing a rank', () => {
    const rng = new Rng(3);
    const scores = Float32Array.from({ length: 2000 }, () => Math.floor(rng.next() * 300) / 300);
    const sorted = sortScores(scores);
    const ranks = Float32Array.from(scores, (s) => percentileOf(sorted, s));
    for (let i = 0; i < scores.length; i += 7) {
      let atOrBelow = 0;
      for (const s of scores) if (s <= scores[i]) atOrBelow++;
      expect(ranks[i]).toBe(Math.fround(atOrBelow / scores.length));
    }
    let hardest = 0;
    for (let i = 1; i < scores.length; i++) if (scores[i] > scores[hardest]) hardest = i;
    expect(ranks[hardest]).toBe(1);
  });
});
