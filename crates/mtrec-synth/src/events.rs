//! The events: timestamps with a diurnal rhythm, then each event's user, item, context and
//! labels drawn from their true probabilities.

use std::f64::consts::PI;

use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;

use crate::config::SyntheticConfig;
use crate::constants::*;
use crate::random::*;
use crate::world::{Items, Users, World};

/// Column buffers of the event log, filled row by row.
pub(crate) struct Events {
    pub(crate) user: Vec<usize>,
    pub(crate) item: Vec<usize>,
    pub(crate) timestamp: Vec<i64>,
    pub(crate) hour: Vec<i64>,
    pub(crate) device: Vec<u8>,
    pub(crate) position: Vec<i64>,
    /// All `recent_items` strings concatenated; row `r` is `recent_buf[recent_end[r-1]..recent_end[r]]`.
    pub(crate) recent_buf: String,
    pub(crate) recent_end: Vec<usize>,
    pub(crate) click: Vec<i64>,
    pub(crate) convert: Vec<i64>,
    /// Whether the row would convert had it been clicked: `convert` where clicked, else drawn
    /// from `p_convert` on its own stream (so the observed columns do not depend on it).
    pub(crate) would_convert: Vec<i64>,
    pub(crate) dwell_time: Vec<Option<f64>>,
    pub(crate) high_value: Vec<i64>,
    pub(crate) quality: Vec<u8>,
    pub(crate) p_click: Vec<f64>,
    pub(crate) p_convert: Vec<f64>,
    pub(crate) expected_log_dwell: Vec<f64>,
}

impl Events {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Events {
            user: Vec::with_capacity(n),
            item: Vec::with_capacity(n),
            timestamp: Vec::with_capacity(n),
            hour: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            position: Vec::with_capacity(n),
            recent_buf: String::with_capacity(n * 8),
            recent_end: Vec::with_capacity(n),
            click: Vec::with_capacity(n),
            convert: Vec::with_capacity(n),
            would_convert: Vec::with_capacity(n),
            dwell_time: Vec::with_capacity(n),
            high_value: Vec::with_capacity(n),
            quality: Vec::with_capacity(n),
            p_click: Vec::with_capacity(n),
            p_convert: Vec::with_capacity(n),
            expected_log_dwell: Vec::with_capacity(n),
        }
    }
}

/// Event times over the 30 days, denser in busy hours, in increasing order. The draws are
/// counted per second of the period and read back in order: exactly the sorted draws, in
/// memory of one counter per second whatever the number of rows.
pub(crate) struct SortedTimes {
    counts: Vec<u32>,
    second: usize,
}

impl SortedTimes {
    pub(crate) fn draw(cfg: &SyntheticConfig) -> Self {
        let mut rng = stream_rng(cfg.events_seed(), Stream::Times);
        let hour_dist = WeightedIndex::new(HOUR_WEIGHTS).expect("static weights are valid");
        let mut counts = vec![0u32; (DAYS * SECONDS_PER_DAY) as usize];
        for _ in 0..cfg.rows {
            let day = rng.gen_range(0..DAYS);
            let hour = hour_dist.sample(&mut rng) as i64;
            let second = rng.gen_range(0..3_600);
            counts[(day * SECONDS_PER_DAY + hour * 3_600 + second) as usize] += 1;
        }
        SortedTimes { counts, second: 0 }
    }
}

impl Iterator for SortedTimes {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        while self.counts.get(self.second) == Some(&0) {
            self.second += 1;
        }
        let count = self.counts.get_mut(self.second)?;
        *count -= 1;
        Some(START_EPOCH + self.second as i64)
    }
}

/// The event log drawn chunk after chunk: the same rows, in the same order, whatever the
/// chunks, with memory for one chunk (and the world) only.
pub(crate) struct Simulation<'a> {
    world: &'a World,
    users: &'a Users,
    items: &'a Items,
    times: SortedTimes,
    rng: rand::rngs::StdRng,
    counterfactual_rng: rand::rngs::StdRng,
    user_dist: WeightedIndex<u32>,
    item_dist: WeightedIndex<f64>,
    device_dist: WeightedIndex<f64>,
    hour_effect: Vec<f64>,
    /// Per-user ring of recent clicks, most recent first.
    recent: Vec<[usize; RECENT_LEN]>,
    recent_len: Vec<u8>,
    rows_left: usize,
    history_effect: f64,
}

impl<'a> Simulation<'a> {
    pub(crate) fn new(cfg: &SyntheticConfig, world: &'a World, users: &'a Users, items: &'a Items) -> Self {
        let user_weights: Vec<u32> = users.activity.iter().map(|&a| ACTIVITY_WEIGHTS[a as usize]).collect();
        Simulation {
            world,
            users,
            items,
            times: SortedTimes::draw(cfg),
            rng: stream_rng(cfg.events_seed(), Stream::Events),
            counterfactual_rng: stream_rng(cfg.events_seed(), Stream::Counterfactual),
            user_dist: WeightedIndex::new(&user_weights).expect("at least one user, weights > 0"),
            item_dist: WeightedIndex::new(&items.popularity).expect("at least one item, weights > 0"),
            device_dist: WeightedIndex::new(DEVICE_WEIGHTS).expect("static weights are valid"),
            hour_effect: (0..24).map(|h| CLICK_HOUR * (2.0 * PI * (h as f64 - CLICK_PEAK_HOUR) / 24.0).cos()).collect(),
            recent: vec![[0usize; RECENT_LEN]; users.ids.len()],
            recent_len: vec![0u8; users.ids.len()],
            rows_left: cfg.rows,
            history_effect: cfg.history_effect,
        }
    }

    /// The next `rows` events (fewer at the end; `None` once every row is drawn).
    pub(crate) fn next_chunk(&mut self, rows: usize) -> Option<Events> {
        let n = rows.min(self.rows_left);
        if n == 0 {
            return None;
        }
        self.rows_left -= n;
        let (world, users, items) = (self.world, self.users, self.items);
        let dim = world.dim;
        let d = dim as f64;
        let rng = &mut self.rng;
        let (recent, recent_len) = (&mut self.recent, &mut self.recent_len);
        let mut ev = Events::with_capacity(n);
        for row in 0..n {
            let t = self.times.next().expect("one time per row");
            ev.timestamp.push(t);
            ev.hour.push((t % SECONDS_PER_DAY) / 3_600);
            let user = self.user_dist.sample(rng);
            let item = self.item_dist.sample(rng);
            let device = if rng.gen::<f64>() < DEVICE_LOYALTY {
                users.device[user] as usize
            } else {
                self.device_dist.sample(rng)
            };
            let position = rng.gen_range(1..=POSITIONS);

            // Affinities s = d·(w·(u ⊙ v)) have roughly unit variance.
            let u = &users.latent[user * dim..(user + 1) * dim];
            let v = &items.latent[item * dim..(item + 1) * dim];
            let (mut s1, mut s2) = (0.0, 0.0);
            for k in 0..dim {
                let x = u[k] * v[k];
                s1 += world.w1[k] * x;
                s2 += world.w2[k] * x;
            }
            s1 *= d;
            s2 *= d;

            let len = recent_len[user] as usize;
            let history = if self.history_effect == 0.0 {
                0.0
            } else {
                let clicked = recent[user][..len].iter().map(|&j| &items.latent[j * dim..(j + 1) * dim]);
                self.history_effect * max_cosine(v, clicked)
            };
            let p_click = sigmoid(
                CLICK_AFFINITY * s1
                    + CLICK_POSITION * (position - 1) as f64
                    + CLICK_DEVICE[device]
                    + self.hour_effect[ev.hour[row] as usize]
                    + CLICK_BIAS
                    + history,
            );
            let p_convert = sigmoid(CONVERT_AFFINITY * s2 + CONVERT_PRICE * items.price_z[item] + CONVERT_BIAS);
            let expected_log_dwell = DWELL_LOG_MEAN + DWELL_AFFINITY * s1;

            // recent_items is what the user had clicked before this event.
            for (j, &it) in recent[user][..len].iter().enumerate() {
                if j > 0 {
                    ev.recent_buf.push('|');
                }
                ev.recent_buf.push_str(&items.ids[it]);
            }
            ev.recent_end.push(ev.recent_buf.len());

            let click = rng.gen::<f64>() < p_click;
            let (convert, dwell) = if click {
                let convert = rng.gen::<f64>() < p_convert;
                let dwell = (expected_log_dwell + DWELL_LOG_SD * std_normal(rng)).exp();
                let ring = &mut recent[user];
                ring.copy_within(0..RECENT_LEN - 1, 1);
                ring[0] = item;
                recent_len[user] = (len + 1).min(RECENT_LEN) as u8;
                (convert, Some(dwell))
            } else {
                (false, None)
            };
            let high_value = rng.gen::<f64>() < users.p_high_value[user];
            let pq = items.p_quality[item];
            let q = rng.gen::<f64>();
            let quality = if q < pq[0] {
                0
            } else if q < pq[0] + pq[1] {
                1
            } else {
                2
            };

            ev.user.push(user);
            ev.item.push(item);
            ev.device.push(device as u8);
            ev.position.push(position);
            ev.click.push(i64::from(click));
            ev.convert.push(i64::from(convert));
            let would_convert = if click { convert } else { self.counterfactual_rng.gen::<f64>() < p_convert };
            ev.would_convert.push(i64::from(would_convert));
            ev.dwell_time.push(dwell);
            ev.high_value.push(i64::from(high_value));
            ev.quality.push(quality);
            ev.p_click.push(p_click);
            ev.p_convert.push(p_convert);
            ev.expected_log_dwell.push(expected_log_dwell);
        }
        Some(ev)
    }
}

/// The largest cosine similarity of `v` to any of `others`; 0 without any.
fn max_cosine<'a>(v: &[f64], others: impl Iterator<Item = &'a [f64]>) -> f64 {
    let norm = |x: &[f64]| crate::random::dot(x, x).sqrt();
    let nv = norm(v);
    others
        .map(|o| crate::random::dot(v, o) / (nv * norm(o)).max(f64::MIN_POSITIVE))
        .fold(None, |best: Option<f64>, c| Some(best.map_or(c, |b| b.max(c))))
        .unwrap_or(0.0)
}
