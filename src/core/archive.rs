//! What a Git archive commit says: its summary line and its author, from
//! the project event it records. Pure, so every odd user name and missing
//! field is unit-tested; `deliver::git` runs `git` with the result.

use serde_json::Value;

/// `project.published: Finance (finance), snapshot v7 [snap-7], to prod`;
/// a snapshot with only a tag or only an id names just that one.
pub fn summary(event: &Value) -> String {
    let data = &event["data"];
    let text = |key: &str| data[key].as_str().unwrap_or_default().trim();
    let mut line = format!(
        "{}: {} ({})",
        event["type"].as_str().unwrap_or("project event"),
        text("project_name"),
        text("project_id")
    );
    let snapshot: Vec<String> = [
        Some(text("snapshot_tag").to_owned()).filter(|t| !t.is_empty()),
        Some(text("snapshot_id"))
            .filter(|id| !id.is_empty())
            .map(|id| format!("[{id}]")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !snapshot.is_empty() {
        line.push_str(&format!(", snapshot {}", snapshot.join(" ")));
    }
    if !text("target_environment").is_empty() {
        line.push_str(&format!(", to {}", text("target_environment")));
    }
    line
}

/// The commit author from the event's user, which the design tool sends as
/// `Ada Lovelace <ada@example.com>`, a bare `ada@example.com` or a bare
/// name `ada`: always `Name <email>`, with a made-up address for a bare
/// name and the address's local part for a bare address.
pub fn author(user: Option<&str>) -> String {
    let user = user
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or("unknown");
    if let Some((name, rest)) = user.split_once('<') {
        let email = rest.trim_end_matches('>').trim();
        let name = name.trim();
        if !email.is_empty() {
            let name = if name.is_empty() {
                local_part(email)
            } else {
                name
            };
            return format!("{name} <{email}>");
        }
        return bare(name);
    }
    bare(user)
}

fn bare(user: &str) -> String {
    let user = if user.is_empty() { "unknown" } else { user };
    if user.contains('@') {
        format!("{} <{user}>", local_part(user))
    } else {
        format!("{user} <{}@users.herald.invalid>", user.replace(' ', "."))
    }
}

fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or(email)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_author_accepts_a_mailbox_an_address_or_a_name() {
        assert_eq!(
            author(Some("ada <ada@example.com>")),
            "ada <ada@example.com>"
        );
        assert_eq!(
            author(Some("Ada Lovelace <ada@example.com>")),
            "Ada Lovelace <ada@example.com>"
        );
        assert_eq!(author(Some("<ada@example.com>")), "ada <ada@example.com>");
        assert_eq!(author(Some("ada@example.com")), "ada <ada@example.com>");
        assert_eq!(author(Some("ada")), "ada <ada@users.herald.invalid>");
        assert_eq!(
            author(Some("Ada Lovelace")),
            "Ada Lovelace <Ada.Lovelace@users.herald.invalid>"
        );
        assert_eq!(author(Some("ada <>")), "ada <ada@users.herald.invalid>");
        assert_eq!(author(None), "unknown <unknown@users.herald.invalid>");
        assert_eq!(author(Some("  ")), "unknown <unknown@users.herald.invalid>");
    }

    #[test]
    fn a_summary_leaves_no_double_space_for_a_missing_snapshot_part() {
        let event = |data: Value| json!({"type": "project.snapshot_created", "data": data});
        let base = json!({"project_name": "Finance", "project_id": "finance"});
        let with = |extra: Value| {
            let mut data = base.clone();
            data.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            summary(&event(data))
        };
        assert_eq!(
            with(
                json!({"snapshot_tag": "v7", "snapshot_id": "snap-7", "target_environment": "prod"})
            ),
            "project.snapshot_created: Finance (finance), snapshot v7 [snap-7], to prod"
        );
        assert_eq!(
            with(json!({"snapshot_tag": "", "snapshot_id": "snap-7"})),
            "project.snapshot_created: Finance (finance), snapshot [snap-7]"
        );
        assert_eq!(
            with(json!({"snapshot_tag": "v7"})),
            "project.snapshot_created: Finance (finance), snapshot v7"
        );
        assert_eq!(
            with(json!({})),
            "project.snapshot_created: Finance (finance)"
        );
    }
}
