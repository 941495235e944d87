//! Per-user ranking metrics for pair tasks: NDCG@K, Recall@K and MRR with binary relevance
//! (label != 0).
//!
//! Each user's rows are ordered by score descending; rows with equal scores (by
//! `f32::total_cmp`) keep ascending row order, so the ranking is deterministic and the same
//! as a stable sort on `-score`. Users without a positive row are skipped and counted.

use serde::{Deserialize, Serialize};

use crate::groups::Groups;
use crate::weight::Weight;

/// Ranking quality of one user's list.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UserRanking {
    /// DCG@K over the ideal DCG@K, gains `1 / log2(rank + 1)` for ranks 1..=K.
    pub ndcg: f64,
    /// Positives in the top K over all the user's positives.
    pub recall: f64,
    /// 1 / rank of the first positive in the full list.
    pub reciprocal_rank: f64,
}

/// Ranking metrics averaged over users (each user weighs the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    pub k: usize,
    pub ndcg: Option<f64>,
    pub recall: Option<f64>,
    pub mrr: Option<f64>,
    pub users_evaluated: usize,
    /// Users with no positive row.
    pub users_skipped: usize,
}

/// The ranking of each user (`None` when the user has no positive), in group order.
pub fn per_user_ranking(scores: &[f32], labels: &[f32], users: &Groups, k: usize) -> Vec<Option<UserRanking>> {
    assert_eq!(scores.len(), labels.len(), "per_user_ranking: lengths differ");
    assert_eq!(users.rows_total(), scores.len(), "per_user_ranking: groups cover a different row count");
    let mut order: Vec<u32> = Vec::new();
    (0..users.len())
        .map(|g| {
            order.clear();
            order.extend_from_slice(users.rows(g));
            let positives = order.iter().filter(|&&r| labels[r as usize] != 0.0).count();
            if positives == 0 {
                return None;
            }
            // Stable sort: rows come ascending, so ties keep row order.
            order.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
            let (mut dcg, mut hits, mut first) = (0.0, 0usize, None);
            for (rank, &r) in order.iter().enumerate() {
                if labels[r as usize] != 0.0 {
                    first.get_or_insert(rank + 1);
                    if rank < k {
                        dcg += 1.0 / ((rank + 2) as f64).log2();
                        hits += 1;
                    }
                }
            }
            let ideal: f64 = (0..positives.min(k)).map(|rank| 1.0 / ((rank + 2) as f64).log2()).sum();
            Some(UserRanking {
                ndcg: if ideal > 0.0 { dcg / ideal } else { 0.0 },
                recall: hits as f64 / positives as f64,
                reciprocal_rank: 1.0 / first.map_or(f64::INFINITY, |f| f as f64),
            })
        })
        .collect()
}

/// Averages per-user rankings, each user weighted by its multiplicity in `user_weights`
/// (1 when `None`).
pub fn ranking_from_parts<W: Weight>(
    per_user: &[Option<UserRanking>],
    k: usize,
    user_weights: Option<&[W]>,
) -> RankingMetrics {
    let (mut ndcg, mut recall, mut mrr, mut total) = (0.0, 0.0, 0.0, 0.0);
    let mut evaluated = 0;
    for (g, ranking) in per_user.iter().enumerate() {
        if let Some(r) = ranking {
            let w = user_weights.map_or(1.0, |w| w[g].value());
            ndcg += w * r.ndcg;
            recall += w * r.recall;
            mrr += w * r.reciprocal_rank;
            total += w;
            evaluated += 1;
        }
    }
    let mean = |sum: f64| (total > 0.0).then(|| sum / total);
    RankingMetrics {
        k,
        ndcg: mean(ndcg),
        recall: mean(recall),
        mrr: mean(mrr),
        users_evaluated: evaluated,
        users_skipped: per_user.len() - evaluated,
    }
}

/// NDCG@K, Recall@K and MRR averaged over users with at least one positive.
pub fn ranking(scores: &[f32], labels: &[f32], users: &Groups, k: usize) -> RankingMetrics {
    ranking_from_parts::<f32>(&per_user_ranking(scores, labels, users, k), k, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_keep_row_order_and_users_without_positive_are_skipped() {
        let users = Groups::from_ids(&[1, 1, 1, 2, 2]);
        // User 1: rows 0 and 1 tie; row 0 (negative) ranks first, so the positive is 2nd.
        let ranking = per_user_ranking(&[0.5, 0.5, 0.1, 0.3, 0.2], &[0.0, 1.0, 0.0, 0.0, 0.0], &users, 1);
        let u = ranking[0].unwrap();
        assert_eq!((u.ndcg, u.recall, u.reciprocal_rank), (0.0, 0.0, 0.5));
        assert_eq!(ranking[1], None);
        let m = ranking_from_parts::<f32>(&ranking, 1, None);
        assert_eq!((m.users_evaluated, m.users_skipped, m.mrr), (1, 1, Some(0.5)));
    }
}
