//! How long a batch may run before it counts as stalled.
//!
//! The allowance of a cube's batch is, in order: the first configured rule
//! matching its environment and cube; else, when learning is on and the
//! cube has enough history, a multiple of a high percentile of its recent
//! successful durations (never below a floor); else the default.

use std::time::Duration;

use super::filter::Pattern;

#[derive(Debug, Clone, PartialEq)]
pub struct StallPolicy {
    /// `None`: batches no rule or history covers never stall.
    pub default: Option<Duration>,
    pub rules: Vec<StallRule>,
    pub learning: Option<Learning>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StallRule {
    /// Empty: any environment.
    pub environments: Vec<Pattern>,
    /// Matched against cube id and name; empty: any cube.
    pub cubes: Vec<Pattern>,
    pub max_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Learning {
    /// Allowance = factor × percentile of recent durations.
    pub factor: f64,
    /// 0–100, e.g. 95.
    pub percentile: f64,
    pub floor: Duration,
    /// Fewer successful batches than this: nothing is learned yet.
    pub min_samples: usize,
    /// How many recent successful batches are considered.
    pub window: usize,
}

impl Default for StallPolicy {
    fn default() -> Self {
        Self {
            default: Some(Duration::from_secs(4 * 3600)),
            rules: Vec::new(),
            learning: Some(Learning::default()),
        }
    }
}

impl Default for Learning {
    fn default() -> Self {
        Self {
            factor: 3.0,
            percentile: 95.0,
            floor: Duration::from_secs(10 * 60),
            min_samples: 5,
            window: 20,
        }
    }
}

impl StallPolicy {
    /// The allowance for a batch of this cube; `history` holds its recent
    /// successful durations (any order).
    pub fn allowance(
        &self,
        environment_id: &str,
        cube_id: &str,
        cube_name: &str,
        history: &[Duration],
    ) -> Option<Duration> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.applies(environment_id, cube_id, cube_name))
        {
            return Some(rule.max_duration);
        }
        self.learning
            .as_ref()
            .and_then(|l| l.allowance(history))
            .or(self.default)
    }

    /// Whether a learned allowance may apply (the store then fetches history).
    pub fn learns(&self) -> bool {
        self.learning.is_some()
    }
}

impl StallRule {
    fn applies(&self, environment_id: &str, cube_id: &str, cube_name: &str) -> bool {
        let env_ok = self.environments.is_empty()
            || self.environments.iter().any(|p| p.matches(environment_id));
        let cube_ok = self.cubes.is_empty()
            || self
                .cubes
                .iter()
                .any(|p| p.matches(cube_id) || p.matches(cube_name));
        env_ok && cube_ok
    }
}

impl Learning {
    pub fn allowance(&self, history: &[Duration]) -> Option<Duration> {
        if history.len() < self.min_samples || history.is_empty() {
            return None;
        }
        let mut sorted = history.to_vec();
        sorted.sort();
        // Nearest-rank percentile.
        let rank = ((self.percentile / 100.0) * sorted.len() as f64).ceil() as usize;
        let p = sorted[rank.clamp(1, sorted.len()) - 1];
        // `mul_f64` panics on overflow; a saturated allowance never expires.
        let scaled =
            Duration::try_from_secs_f64(p.as_secs_f64() * self.factor).unwrap_or(Duration::MAX);
        Some(scaled.max(self.floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn a_matching_rule_wins_over_history_and_default() {
        let policy = StallPolicy {
            default: Some(mins(120)),
            rules: vec![StallRule {
                environments: vec![Pattern::new("prod")],
                cubes: vec![Pattern::new("sales*")],
                max_duration: mins(30),
            }],
            learning: Some(Learning::default()),
        };
        let history = vec![mins(50); 10];
        assert_eq!(
            policy.allowance("prod", "c1", "sales_eu", &history),
            Some(mins(30))
        );
        assert_eq!(
            policy.allowance("dev", "c1", "sales_eu", &history),
            Some(mins(150))
        );
        assert_eq!(
            policy.allowance("dev", "c1", "sales_eu", &[]),
            Some(mins(120))
        );
    }

    #[test]
    fn learning_needs_enough_samples_and_respects_the_floor() {
        let l = Learning::default();
        assert_eq!(l.allowance(&[mins(5); 4]), None);
        assert_eq!(l.allowance(&[Duration::from_secs(30); 5]), Some(mins(10)));
        let mut history: Vec<_> = (1..=20).map(mins).collect();
        history.reverse();
        // p95 of 1..=20 minutes is 19 minutes; three times that is 57.
        assert_eq!(l.allowance(&history), Some(mins(57)));
    }

    #[test]
    fn without_a_default_uncovered_batches_never_stall() {
        let policy = StallPolicy {
            default: None,
            rules: vec![],
            learning: None,
        };
        assert_eq!(policy.allowance("prod", "c", "c", &[mins(1); 10]), None);
    }

    #[test]
    fn a_huge_factor_saturates_instead_of_panicking() {
        let learning = Learning {
            factor: 1e300,
            min_samples: 1,
            ..Learning::default()
        };
        assert_eq!(learning.allowance(&[mins(30)]), Some(Duration::MAX));
    }
}
