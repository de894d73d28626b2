//! Which events a subscription wants: event-name patterns plus optional
//! scope filters (environment, project, cube), each exact or a glob.
//!
//! A scope filter on a dimension only passes events that have a value there:
//! a subscription filtered to `cubes = ["sales"]` does not receive
//! `environment.created`, which concerns no cube.

use super::event::{EventType, Scope};

/// A glob: `*` matches any run of characters (dots included), `?` exactly
/// one; everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_glob(&self) -> bool {
        self.0.contains(['*', '?'])
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }
}

/// A delivery-log filter by event type — exact (`aggregate.batch.failed`)
/// or a glob (`aggregate.batch.*`), matched as subscription filters are —
/// resolved to the event type names it names, which both stores then
/// filter on alike. Empty text means any type (`None`); a pattern naming
/// no type is refused, so a typo does not read as an empty log.
pub fn event_types_matching(pattern: &str) -> Result<Option<Vec<String>>, String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Ok(None);
    }
    let p = Pattern::new(pattern);
    let types: Vec<String> = EventType::ALL
        .into_iter()
        .filter(|t| p.matches(t.as_str()))
        .map(|t| t.as_str().to_owned())
        .collect();
    if types.is_empty() {
        return Err(format!("`{pattern}` matches no event type"));
    }
    Ok(Some(types))
}

/// Iterative glob matching with single-star backtracking: linear in
/// practice, never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A subscription's filter. Empty scope lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub events: Vec<Pattern>,
    pub environments: Vec<Pattern>,
    pub projects: Vec<Pattern>,
    /// Matched against the cube id and the cube name.
    pub cubes: Vec<Pattern>,
}

impl EventFilter {
    pub fn matches(&self, event_type: EventType, scope: &Scope) -> bool {
        any_matches(&self.events, Some(event_type.as_str()))
            && scope_matches(&self.environments, &[&scope.environment_id])
            && scope_matches(&self.projects, &[&scope.project_id])
            && scope_matches(&self.cubes, &[&scope.cube_id, &scope.cube_name])
    }

    /// Whether some event of this type could pass (ignoring scope).
    pub fn could_match(&self, event_type: EventType) -> bool {
        any_matches(&self.events, Some(event_type.as_str()))
    }

    /// Event patterns that can never match a known event name: almost
    /// certainly a typo in the configuration.
    pub fn unmatched_event_patterns(&self) -> Vec<&Pattern> {
        self.events
            .iter()
            .filter(|p| !EventType::ALL.iter().any(|t| p.matches(t.as_str())))
            .collect()
    }
}

fn scope_matches(patterns: &[Pattern], values: &[&Option<String>]) -> bool {
    patterns.is_empty()
        || values
            .iter()
            .any(|value| any_matches(patterns, value.as_deref()))
}

fn any_matches(patterns: &[Pattern], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pats(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(*p)).collect()
    }

    #[test]
    fn globs_match_like_a_shell() {
        let p = Pattern::new("aggregate.batch.*");
        assert!(p.matches("aggregate.batch.failed"));
        assert!(!p.matches("environment.created"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("a?c").matches("abc"));
        assert!(!Pattern::new("a?c").matches("ac"));
        assert!(Pattern::new("*.failed").matches("aggregate.batch.failed"));
        assert!(Pattern::new("sales").matches("sales"));
        assert!(!Pattern::new("sales").matches("sales-eu"));
        assert!(Pattern::new("a*b*c").matches("axxbyyc"));
        assert!(!Pattern::new("a*b*c").matches("axxbyy"));
    }

    #[test]
    fn scope_filters_need_a_value_in_their_dimension() {
        let filter = EventFilter {
            events: pats(&["*"]),
            cubes: pats(&["sales*"]),
            ..EventFilter::default()
        };
        let cube = Scope {
            environment_id: Some("prod".into()),
            cube_id: Some("c-17".into()),
            cube_name: Some("sales_eu".into()),
            ..Scope::default()
        };
        let environment = Scope {
            environment_id: Some("prod".into()),
            ..Scope::default()
        };
        assert!(filter.matches(EventType::BatchFailed, &cube));
        assert!(!filter.matches(EventType::EnvironmentCreated, &environment));
    }

    #[test]
    fn typos_in_event_patterns_are_reported() {
        let filter = EventFilter {
            events: pats(&["aggregate.batch.*", "aggregate.batch.succeded"]),
            ..EventFilter::default()
        };
        let bad: Vec<_> = filter.unmatched_event_patterns();
        assert_eq!(bad, vec![&Pattern::new("aggregate.batch.succeded")]);
    }

    proptest! {
        #[test]
        fn a_literal_pattern_matches_only_itself(a in "[a-z.]{0,12}", b in "[a-z.]{0,12}") {
            prop_assert_eq!(Pattern::new(a.clone()).matches(&b), a == b);
        }

        #[test]
        fn a_star_around_any_substring_matches(pre in "[a-z]{0,6}", mid in "[a-z]{0,6}", post in "[a-z]{0,6}") {
            let text = format!("{pre}{mid}{post}");
            let pattern = format!("*{mid}*");
            prop_assert!(Pattern::new(pattern).matches(&text));
        }
    }
}
