//! Row-sharded embedding tables: a table too large to copy on every rank lives in parts, the
//! row of id `i` on rank `i mod N` (at its local row `i / N`), as TorchRec's row-wise sharding
//! places rows. Encoded ids are dense (0..rows), so the modulo spreads them evenly whatever
//! their frequency order.
//!
//! A step fetches the rows its batch looks up from their owners (one all-to-all of ids, one of
//! rows) into a compact table of just those rows, the batch's ids renumbered to it, and runs
//! the model unchanged; the touched rows' gradients go back to their owners (all-to-all), which
//! merge them in rank order and update their rows and optimizer state alone. Every row is
//! updated with the same sums in the same order as a replicated table's, so sharding changes
//! where rows live, not the weights a run reaches.

use mtrec_model::embedding::{EmbeddingTable, EmbeddingTables, SparseGrad};
use mtrec_model::layout::{InputLayout, SlotSource};
use mtrec_model::MultiTaskModel;
use mtrec_schema::{EncodedDataset, FeatureColumn, FeaturePipeline};

use super::Collective;
use crate::config::{EmbeddingSharding, TablePlacement};
use crate::error::TrainError;

/// Which tables are row-sharded, over how many ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Sharding {
    rank: usize,
    ranks: usize,
    /// Per table: its full row count when row-sharded, `None` when replicated.
    full_rows: Vec<Option<usize>>,
}

impl Sharding {
    /// The placement a config asks for, for rank `rank` of `ranks` (one rank: none): the tables
    /// it names as it says, the others sharded when their weights take at least `min_bytes`.
    pub fn plan(
        config: &EmbeddingSharding,
        pipeline: &FeaturePipeline,
        rank: usize,
        ranks: usize,
    ) -> Result<Self, TrainError> {
        let sizes = pipeline.table_sizes();
        if let Some(unknown) = config.tables.keys().find(|name| !sizes.contains_key(*name)) {
            let names: Vec<&str> = sizes.keys().map(String::as_str).collect();
            return Err(TrainError::Config(format!(
                "embedding_sharding.tables: the model has no table {unknown:?} (its tables: {})",
                names.join(", ")
            )));
        }
        let full_rows = sizes
            .iter()
            .map(|(name, &(rows, dim))| {
                let sharded = match config.tables.get(name) {
                    Some(placement) => *placement == TablePlacement::Sharded,
                    None => (rows * dim * std::mem::size_of::<f32>()) as u64 >= config.min_bytes,
                };
                (ranks > 1 && sharded).then_some(rows)
            })
            .collect();
        Ok(Sharding { rank, ranks, full_rows })
    }

    /// A model for this rank: row-sharded tables hold this rank's rows only.
    pub fn model(
        &self,
        pipeline: &FeaturePipeline,
        config: &mtrec_model::ModelConfig,
        seed: u64,
    ) -> Result<MultiTaskModel, TrainError> {
        let shard_of = |t: usize| self.full_rows[t].map(|_| (self.rank, self.ranks));
        Ok(MultiTaskModel::new_sharded(pipeline, config, seed, &shard_of)?)
    }

    /// Whether any table is sharded.
    pub fn is_active(&self) -> bool {
        self.full_rows.iter().any(Option::is_some)
    }

    /// The names of the sharded tables.
    pub fn sharded_names(&self, tables: &EmbeddingTables) -> Vec<String> {
        self.sharded().map(|t| tables.tables[t].name.clone()).collect()
    }

    fn sharded(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.full_rows.len()).filter(|&t| self.full_rows[t].is_some())
    }

    fn owner(&self, id: u32) -> usize {
        id as usize % self.ranks
    }

    /// The whole tables, their shards gathered from every rank, on rank 0 (`None` elsewhere):
    /// for the bundle.
    pub fn gather_tables(&self, comm: &dyn Collective, tables: &EmbeddingTables) -> Option<EmbeddingTables> {
        let mut whole = (comm.rank() == 0).then(|| tables.clone());
        for t in self.sharded() {
            let table = &tables.tables[t];
            let chunks: Vec<&[f32]> =
                (0..self.ranks).map(|k| if k == 0 { &table.weights[..] } else { &[][..] }).collect();
            let shards = comm.all_to_all_f32(&chunks);
            if let Some(whole) = &mut whole {
                let (full, dim) = (self.full_rows[t].expect("a sharded table"), table.dim);
                let mut weights = vec![0.0; full * dim];
                for (rank, shard) in shards.iter().enumerate() {
                    for (local, row) in shard.chunks_exact(dim).enumerate() {
                        let global = local * self.ranks + rank;
                        weights[global * dim..(global + 1) * dim].copy_from_slice(row);
                    }
                }
                whole.tables[t] = EmbeddingTable { weights, rows: full, ..table.clone() };
            }
        }
        whole
    }

    /// Fetches the rows `data` looks up in sharded tables from their owners and renumbers
    /// `data`'s ids of those tables to rows of the compact tables returned: one all-to-all of
    /// ids and one of rows for all the sharded tables. Every rank calls it together (with its
    /// own data, possibly empty).
    pub fn fetch(
        &self,
        comm: &dyn Collective,
        layout: &InputLayout,
        tables: &EmbeddingTables,
        data: &mut EncodedDataset,
    ) -> Fetched {
        let sharded: Vec<usize> = self.sharded().collect();
        // Per sharded table, its distinct ids in order of first appearance (each renumbered in
        // place to its position).
        let globals: Vec<Vec<u32>> = sharded.iter().map(|&t| renumber(layout, t, data)).collect();
        // Per owner: each table's count of ids asked, then the ids, table after table; and
        // where each answer goes.
        let mut asked: Vec<Vec<u32>> = vec![vec![0; sharded.len()]; self.ranks];
        let mut slots: Vec<Vec<(usize, u32)>> = vec![Vec::new(); self.ranks];
        for (i, ids) in globals.iter().enumerate() {
            for (k, &id) in ids.iter().enumerate() {
                let owner = self.owner(id);
                asked[owner][i] += 1;
                asked[owner].push(id);
                slots[owner].push((i, k as u32));
            }
        }
        let requests = comm.all_to_all_u32(&asked.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let answers: Vec<Vec<f32>> = requests
            .iter()
            .map(|request| {
                let (counts, mut ids) = request.split_at(sharded.len());
                let mut rows = Vec::new();
                for (&t, &n) in sharded.iter().zip(counts) {
                    let shard = &tables.tables[t];
                    for &id in &ids[..n as usize] {
                        rows.extend_from_slice(shard.row(id / self.ranks as u32));
                    }
                    ids = &ids[n as usize..];
                }
                rows
            })
            .collect();
        let answered = comm.all_to_all_f32(&answers.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut weights: Vec<Vec<f32>> =
            sharded.iter().zip(&globals).map(|(&t, ids)| vec![0.0; ids.len() * tables.tables[t].dim]).collect();
        for (owner, rows) in answered.iter().enumerate() {
            let mut at = 0;
            for &(i, k) in &slots[owner] {
                let dim = tables.tables[sharded[i]].dim;
                weights[i][k as usize * dim..(k as usize + 1) * dim].copy_from_slice(&rows[at..at + dim]);
                at += dim;
            }
        }
        let mut fetched = Fetched { tables: vec![None; self.full_rows.len()], swapped: false };
        for ((&t, globals), weights) in sharded.iter().zip(globals).zip(weights) {
            let shard = &tables.tables[t];
            let table = EmbeddingTable { name: shard.name.clone(), rows: globals.len(), dim: shard.dim, weights };
            fetched.tables[t] = Some((table, globals));
        }
        fetched
    }

    /// A step's embedding gradients (rows of the compact tables for sharded ones) made into
    /// what this rank applies: replicated tables' rows gathered from every rank and merged in
    /// rank order; sharded tables' rows sent to their owners (one all-to-all of ids, one of
    /// values, for all of them), merged there in rank order, and numbered as rows of this
    /// rank's shard.
    pub fn exchange(
        &self,
        comm: &dyn Collective,
        tables: &EmbeddingTables,
        mut grads: Vec<SparseGrad>,
        fetched: &Fetched,
    ) -> Vec<SparseGrad> {
        let sharded: Vec<usize> = self.sharded().collect();
        let routed: Vec<SparseGrad> = sharded.iter().map(|&t| std::mem::take(&mut grads[t])).collect();
        let dims: Vec<usize> = tables.tables.iter().map(|t| t.dim).collect();
        let mut out = if sharded.len() < tables.tables.len() {
            tables.merge_sparse_grads(super::gather_sparse(comm, grads, &dims))
        } else {
            grads
        };
        // Per owner: each table's count of rows, then their local ids, table after table; and
        // their values in the same order.
        let mut ids: Vec<Vec<u32>> = vec![vec![0; sharded.len()]; self.ranks];
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); self.ranks];
        for (i, (&t, grad)) in sharded.iter().zip(&routed).enumerate() {
            let globals = &fetched.tables[t].as_ref().expect("the step fetched every sharded table").1;
            for (&k, row) in grad.ids.iter().zip(grad.values.chunks_exact(dims[t])) {
                let id = globals[k as usize];
                let owner = self.owner(id);
                ids[owner][i] += 1;
                ids[owner].push(id / self.ranks as u32);
                values[owner].extend_from_slice(row);
            }
        }
        let ids = comm.all_to_all_u32(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let values = comm.all_to_all_f32(&values.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // Per sharded table, each rank's rows in rank order.
        let mut parts: Vec<Vec<SparseGrad>> = vec![Vec::with_capacity(self.ranks); sharded.len()];
        for (ids, values) in ids.iter().zip(&values) {
            let (counts, mut ids) = ids.split_at(sharded.len());
            let mut values = &values[..];
            for (i, &n) in counts.iter().enumerate() {
                let (n, dim) = (n as usize, dims[sharded[i]]);
                parts[i].push(SparseGrad { ids: ids[..n].to_vec(), values: values[..n * dim].to_vec() });
                (ids, values) = (&ids[n..], &values[n * dim..]);
            }
        }
        for (&t, parts) in sharded.iter().zip(parts) {
            out[t] = tables.merge_table_grads(t, parts);
        }
        out
    }
}

/// Renumbers `data`'s ids of table `t` (in every column that looks it up) to their positions
/// among the table's distinct ids, in order of first appearance; returns those ids.
fn renumber(layout: &InputLayout, t: usize, data: &mut EncodedDataset) -> Vec<u32> {
    // Hashed on every lookup of every step: foldhash, not the default DoS-resistant SipHash.
    let mut compact: foldhash::HashMap<u32, u32> = foldhash::HashMap::default();
    let mut globals: Vec<u32> = Vec::new();
    let mut columns: Vec<usize> = layout
        .slots
        .iter()
        .filter(|s| {
            matches!(s.source, SlotSource::Embedding { table, .. } | SlotSource::Sequence { table, .. } if table == t)
        })
        .map(|s| s.feature)
        .collect();
    columns.sort_unstable();
    columns.dedup();
    for f in columns {
        let ids = match &mut data.features[f] {
            FeatureColumn::Ids(ids) => ids,
            FeatureColumn::Lists { values, .. } => values,
            FeatureColumn::Values(_) => continue,
        };
        for id in ids.iter_mut() {
            *id = *compact.entry(*id).or_insert_with(|| {
                globals.push(*id);
                globals.len() as u32 - 1
            });
        }
    }
    globals
}

/// The compact tables a step fetched: per table, the rows it looks up and their global ids.
#[derive(Debug)]
pub struct Fetched {
    tables: Vec<Option<(EmbeddingTable, Vec<u32>)>>,
    swapped: bool,
}

impl Fetched {
    /// Puts the compact tables in `tables`' place, or (called again) the shards back.
    pub fn swap(&mut self, tables: &mut EmbeddingTables) {
        for (t, fetched) in self.tables.iter_mut().enumerate() {
            if let Some((table, _)) = fetched {
                std::mem::swap(&mut tables.tables[t], table);
            }
        }
        self.swapped = !self.swapped;
    }
}

#[cfg(test)]
impl Clone for Fetched {
    fn clone(&self) -> Self {
        Fetched { tables: self.tables.clone(), swapped: false }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        // A fetch left swapped in would leave a model without its shards.
        debug_assert!(!self.swapped || std::thread::panicking(), "fetched tables dropped while swapped in");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::tests::on_ranks;

    fn pipeline_and_split() -> (FeaturePipeline, EncodedDataset) {
        let dir = tempfile::tempdir().unwrap();
        let synth = mtrec_synth::SyntheticConfig { users: 60, items: 30, rows: 800, seed: 2, ..Default::default() };
        let ingest = mtrec_testkit::ingest_synthetic(dir.path(), &synth).ingest;
        let pipeline = mtrec_ingest::encoded::load_pipeline(&ingest).unwrap();
        let data = mtrec_ingest::encoded::load_split(&ingest, mtrec_schema::Split::Train, &pipeline).unwrap();
        (pipeline, data)
    }

    #[test]
    fn the_plan_follows_sizes_and_names_and_refuses_unknown_tables() {
        let (pipeline, _) = pipeline_and_split();
        let sizes = pipeline.table_sizes();
        let everything = EmbeddingSharding { min_bytes: 0, ..Default::default() };
        assert_eq!(
            Sharding::plan(&everything, &pipeline, 0, 2).unwrap().full_rows.iter().flatten().count(),
            sizes.len()
        );
        assert!(!Sharding::plan(&everything, &pipeline, 0, 1).unwrap().is_active(), "one rank shards nothing");
        assert!(!Sharding::plan(&EmbeddingSharding::default(), &pipeline, 0, 2).unwrap().is_active());
        let user =
            EmbeddingSharding { min_bytes: u64::MAX, tables: [("user_id".to_owned(), TablePlacement::Sharded)].into() };
        let plan = Sharding::plan(&user, &pipeline, 1, 2).unwrap();
        let sharded: Vec<&String> =
            sizes.keys().zip(&plan.full_rows).filter(|(_, r)| r.is_some()).map(|(n, _)| n).collect();
        assert_eq!(sharded, ["user_id"]);
        let unknown = EmbeddingSharding { tables: [("nope".to_owned(), TablePlacement::Sharded)].into(), ..user };
        let err = Sharding::plan(&unknown, &pipeline, 0, 2).unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("user_id"), "{err}");
    }

    /// Three ranks' shards hold the rows of the whole model's tables (initialized alike), a
    /// fetch gives each rank the rows its data looks up, and rank 0 gathers the whole tables.
    #[test]
    fn shards_fetch_and_gather_the_rows_of_the_whole_table() {
        let (pipeline, data) = pipeline_and_split();
        let config = mtrec_model::ModelConfig::default();
        let whole = MultiTaskModel::new(&pipeline, &config, 9).unwrap();
        let everything = EmbeddingSharding { min_bytes: 0, ..Default::default() };
        let results = on_ranks(3, |comm| {
            let sharding = Sharding::plan(&everything, &pipeline, comm.rank(), comm.size()).unwrap();
            let model = sharding.model(&pipeline, &config, 9).unwrap();
            // Each rank fetches for its own rows of the split.
            let rows: Vec<usize> = (comm.rank()..data.rows).step_by(3).collect();
            let original = data.take(&rows);
            let mut batch = original.clone();
            let fetched = sharding.fetch(comm, &model.layout, &model.tables, &mut batch);
            let gathered = sharding.gather_tables(comm, &model.tables);
            (
                original,
                batch,
                fetched.tables.iter().map(|t| t.clone().map(|(table, _)| table)).collect::<Vec<_>>(),
                gathered,
            )
        });
        for (rank, (original, batch, fetched, gathered)) in results.into_iter().enumerate() {
            assert_eq!(gathered.is_some(), rank == 0);
            if let Some(gathered) = gathered {
                assert_eq!(gathered, whole.tables, "the gathered tables");
            }
            for slot in &whole.layout.slots {
                let SlotSource::Embedding { table: t, .. } = slot.source else { continue };
                let (FeatureColumn::Ids(ids), FeatureColumn::Ids(compact)) =
                    (&original.features[slot.feature], &batch.features[slot.feature])
                else {
                    continue;
                };
                let table = fetched[t].as_ref().unwrap();
                for (&id, &k) in ids.iter().zip(compact) {
                    assert_eq!(table.row(k), whole.tables.tables[t].row(id), "rank {rank}, table {t}, id {id}");
                }
            }
        }
    }
}
