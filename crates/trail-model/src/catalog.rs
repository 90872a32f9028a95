//! The built-in action catalog (PRODUCT.md §2): the operations the seed products audit, each with the
//! label the console shows. Actions outside the catalog are accepted and shown raw.

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The `resource.verb` name events carry.
    pub name: &'static str,
    /// What a person reads in the console.
    pub label: &'static str,
    /// The group the console files it under.
    pub category: &'static str,
}

const fn a(name: &'static str, label: &'static str, category: &'static str) -> Action {
    Action { name, label, category }
}

/// Every catalogued action, sorted by name (checked by a test, so lookups can binary-search).
pub const CATALOG: &[Action] = &[
    a("alert.fired", "Alert rule fired", "Trail"),
    a("alert_rule.created", "Alert rule created", "Trail"),
    a("alert_rule.deleted", "Alert rule deleted", "Trail"),
    a("alert_rule.updated", "Alert rule updated", "Trail"),
    a("api.tracing_disabled", "API message tracing disabled", "Integration runtime"),
    a("api.tracing_enabled", "API message tracing enabled", "Integration runtime"),
    a("api_key.created", "API key created", "API keys"),
    a("api_key.revoked", "API key revoked", "API keys"),
    a("api_proxy.access_mode_updated", "API proxy access mode updated", "API proxies"),
    a("api_proxy.created", "API proxy created", "API proxies"),
    a("api_proxy.deleted", "API proxy deleted", "API proxies"),
    a("api_proxy.deployed", "API proxy deployment initiated", "API proxies"),
    a("api_proxy.promoted", "API proxy promotion initiated", "API proxies"),
    a("api_proxy.redeployed", "API proxy redeployment initiated", "API proxies"),
    a("api_proxy.undeployed", "API proxy undeployment initiated", "API proxies"),
    a("api_proxy.updated", "API proxy updated", "API proxies"),
    a("api_proxy.version_created", "API proxy version created", "API proxies"),
    a("api_refresh_token.created", "API refresh token created", "API refresh tokens"),
    a("api_refresh_token.deleted", "API refresh token deleted", "API refresh tokens"),
    a("api_refresh_token.updated", "API refresh token updated", "API refresh tokens"),
    a("carbon_application.created", "Carbon application added", "Integration runtime"),
    a("carbon_application.deleted", "Carbon application removed", "Integration runtime"),
    a("component.access_mode_updated", "Component API access mode updated", "Components"),
    a("component.auto_deploy_disabled", "Auto-deploy on commit disabled", "Components"),
    a("component.auto_deploy_enabled", "Auto-deploy on commit enabled", "Components"),
    a("component.build_config_updated", "Build configuration updated", "Components"),
    a("component.created", "Component created", "Components"),
    a("component.deleted", "Component deleted", "Components"),
    a("component.deployed", "Component deployment initiated", "Components"),
    a("component.promoted", "Component promotion initiated", "Components"),
    a("component.redeployed", "Component redeployment initiated", "Components"),
    a("component.undeployed", "Component undeployment initiated", "Components"),
    a("component.updated", "Component updated", "Components"),
    a("component.version_created", "Component version created", "Components"),
    a("destination.created", "Streaming destination created", "Trail"),
    a("destination.deleted", "Streaming destination deleted", "Trail"),
    a("destination.paused", "Streaming destination paused", "Trail"),
    a("destination.resumed", "Streaming destination resumed", "Trail"),
    a("destination.secret_rotated", "Streaming destination signing secret rotated", "Trail"),
    a("destination.updated", "Streaming destination updated", "Trail"),
    a("endpoint.created", "Endpoint created", "Endpoints"),
    a("endpoint.deleted", "Endpoint deleted", "Endpoints"),
    a("endpoint.disabled", "Endpoint disabled", "Integration runtime"),
    a("endpoint.enabled", "Endpoint enabled", "Integration runtime"),
    a("endpoint.tracing_disabled", "Endpoint message tracing disabled", "Integration runtime"),
    a("endpoint.tracing_enabled", "Endpoint message tracing enabled", "Integration runtime"),
    a("endpoint.updated", "Endpoint updated", "Endpoints"),
    a("escalation_policy.created", "Escalation policy created", "Escalation policies"),
    a("escalation_policy.deleted", "Escalation policy deleted", "Escalation policies"),
    a("escalation_policy.updated", "Escalation policy updated", "Escalation policies"),
    a("export.completed", "Audit log export completed", "Trail"),
    a("export.created", "Audit log export created", "Trail"),
    a("export.downloaded", "Audit log export downloaded", "Trail"),
    a("extension.created", "Extension created", "Extensions"),
    a("extension.deleted", "Extension deleted", "Extensions"),
    a("extension.updated", "Extension updated", "Extensions"),
    a("group.created", "Group created", "Organization users"),
    a("group.deleted", "Group deleted", "Organization users"),
    a("group.member_added", "Group member added", "Organization users"),
    a("group.member_removed", "Group member removed", "Organization users"),
    a("group.role_added", "Role added to group", "Organization users"),
    a("group.role_removed", "Role removed from group", "Organization users"),
    a("group.updated", "Group updated", "Organization users"),
    a(
        "inbound_endpoint.tracing_disabled",
        "Inbound endpoint message tracing disabled",
        "Integration runtime",
    ),
    a("inbound_endpoint.tracing_enabled", "Inbound endpoint message tracing enabled", "Integration runtime"),
    a("integration.access_mode_updated", "Integration as API access mode updated", "Integrations"),
    a("integration.auto_deploy_disabled", "Integration auto-deploy on commit disabled", "Integrations"),
    a("integration.auto_deploy_enabled", "Integration auto-deploy on commit enabled", "Integrations"),
    a("integration.created", "Integration created", "Integrations"),
    a("integration.deleted", "Integration deleted", "Integrations"),
    a("integration.deployed", "Integration deployment initiated", "Integrations"),
    a("integration.promoted", "Integration promotion initiated", "Integrations"),
    a("integration.redeployed", "Integration redeployment initiated", "Integrations"),
    a("integration.undeployed", "Integration undeployment initiated", "Integrations"),
    a("integration.updated", "Integration updated", "Integrations"),
    a("integration.version_created", "Integration version created", "Integrations"),
    a("invitation.accepted", "Invitation accepted", "Organization users"),
    a("invitation.revoked", "Invitation revoked", "Organization users"),
    a("log.event_viewed", "Audit log event viewed", "Trail"),
    a("log.read_audit_disabled", "Read auditing turned off", "Trail"),
    a("log.read_audit_enabled", "Read auditing turned on", "Trail"),
    a("log.read_by_key", "Audit log read by an API key (hourly summary)", "Trail"),
    a("log.searched", "Audit log searched", "Trail"),
    a("log_level.updated", "Log level updated", "Integration runtime"),
    a("logger.created", "Logger added", "Integration runtime"),
    a("message_processor.disabled", "Message processor disabled", "Integration runtime"),
    a("message_processor.enabled", "Message processor enabled", "Integration runtime"),
    a("onprem_key.created", "On-premises key created", "On-premises keys"),
    a("onprem_key.revoked", "On-premises key revoked", "On-premises keys"),
    a("onprem_key.rotated", "On-premises key rotated", "On-premises keys"),
    a("org.created", "Organization created", "Organization"),
    a("org.settings_updated", "Organization settings updated", "Organization"),
    a("project.created", "Project created", "Projects"),
    a("project.deleted", "Project deleted", "Projects"),
    a("project.updated", "Project updated", "Projects"),
    a("project_config.created", "Project configuration created", "Project configuration"),
    a("project_config.deleted", "Project configuration deleted", "Project configuration"),
    a("project_config.updated", "Project configuration updated", "Project configuration"),
    a("proxy_service.disabled", "Proxy service disabled", "Integration runtime"),
    a("proxy_service.enabled", "Proxy service enabled", "Integration runtime"),
    a("proxy_service.tracing_disabled", "Proxy service message tracing disabled", "Integration runtime"),
    a("proxy_service.tracing_enabled", "Proxy service message tracing enabled", "Integration runtime"),
    a("rbac.updated", "RBAC updated", "RBAC"),
    a("retention.updated", "Retention updated", "Organization"),
    a("role.created", "Role created", "Organization users"),
    a("role.deleted", "Role deleted", "Organization users"),
    a("role.updated", "Role updated", "Organization users"),
    a("runbook.created", "Runbook created", "Runbooks"),
    a("runbook.deleted", "Runbook deleted", "Runbooks"),
    a("runbook.updated", "Runbook updated", "Runbooks"),
    a("sequence.tracing_disabled", "Sequence message tracing disabled", "Integration runtime"),
    a("sequence.tracing_enabled", "Sequence message tracing enabled", "Integration runtime"),
    a(
        "sequence_template.tracing_disabled",
        "Sequence template message tracing disabled",
        "Integration runtime",
    ),
    a(
        "sequence_template.tracing_enabled",
        "Sequence template message tracing enabled",
        "Integration runtime",
    ),
    a("service.created", "Service created", "Services"),
    a("service.deleted", "Service deleted", "Services"),
    a("service.updated", "Service updated", "Services"),
    a("user.created", "User added", "Organization users"),
    a("user.deleted", "User removed", "Organization users"),
    a("user.invited", "User invited", "Organization users"),
    a("user.logged_in", "User signed in", "Sign-in"),
    a("user.logged_out", "User signed out", "Sign-in"),
    a("user.password_changed", "Password changed", "Sign-in"),
    a("user.role_assigned", "Role assigned to user", "Organization users"),
    a("user.role_revoked", "Role revoked from user", "Organization users"),
    a("user.sign_in_failed", "Sign-in failed", "Sign-in"),
    a("user.signed_in", "User signed in", "Sign-in"),
    a("user.signed_out", "User signed out", "Sign-in"),
];

/// The catalog entry for an action name, if it is catalogued.
pub fn lookup(name: &str) -> Option<&'static Action> {
    CATALOG.binary_search_by(|a| a.name.cmp(name)).ok().map(|i| &CATALOG[i])
}

/// The display label of an action, if it is catalogued.
pub fn label(name: &str) -> Option<&'static str> {
    lookup(name).map(|a| a.label)
}

/// One choice of the console's action filter: the catalogued actions of a category that read the same
/// (`user.logged_in` and `user.signed_in` are both "User signed in"), so choosing it finds them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub label: &'static str,
    pub category: &'static str,
    /// Sorted by name; never empty.
    pub actions: Vec<&'static str>,
}

/// The action filter's choices, by category and then label.
pub fn choices() -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    let mut sorted: Vec<&Action> = CATALOG.iter().collect();
    sorted.sort_by_key(|a| (a.category, a.label, a.name));
    for a in sorted {
        match out.last_mut() {
            Some(c) if c.category == a.category && c.label == a.label => c.actions.push(a.name),
            _ => out.push(Choice { label: a.label, category: a.category, actions: vec![a.name] }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_valid() {
        for w in CATALOG.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for a in CATALOG {
            assert!(crate::event::is_dotted_name(a.name), "{}", a.name);
        }
    }

    #[test]
    fn one_choice_finds_every_name_of_an_operation() {
        let all = choices();
        let signed_in: Vec<_> = all.iter().filter(|c| c.label == "User signed in").collect();
        assert_eq!(signed_in.len(), 1);
        assert_eq!(signed_in[0].actions, ["user.logged_in", "user.signed_in"]);
        let signed_out = all.iter().find(|c| c.label == "User signed out").map(|c| c.actions.clone());
        assert_eq!(signed_out, Some(vec!["user.logged_out", "user.signed_out"]));
        // Every catalogued action is in exactly one choice.
        let mut names: Vec<&str> = all.iter().flat_map(|c| c.actions.iter().copied()).collect();
        names.sort_unstable();
        assert_eq!(names, CATALOG.iter().map(|a| a.name).collect::<Vec<_>>());
    }

    /// Every operation the seed product documents list (`shared/seeds/`) has its catalog entries.
    #[test]
    fn covers_the_seed_documents() {
        let seeds: &[(&str, &[&str])] = &[
            (
                "Project creation, update, and deletion",
                &["project.created", "project.updated", "project.deleted"],
            ),
            (
                "Integration creation, update, and deletion",
                &["integration.created", "integration.updated", "integration.deleted"],
            ),
            ("Integration promotion initiation", &["integration.promoted"]),
            ("Integration version creation", &["integration.version_created"]),
            (
                "Integration deployment, redeployment, and undeployment initiation",
                &["integration.deployed", "integration.redeployed", "integration.undeployed"],
            ),
            ("Integration as API access mode update", &["integration.access_mode_updated"]),
            (
                "Enabling and disabling integration auto-deployment on commit",
                &["integration.auto_deploy_enabled", "integration.auto_deploy_disabled"],
            ),
            (
                "Integration endpoint creation, update, and deletion",
                &["endpoint.created", "endpoint.updated", "endpoint.deleted"],
            ),
            (
                "API Proxy creation, update, and deletion",
                &["api_proxy.created", "api_proxy.updated", "api_proxy.deleted"],
            ),
            ("API Proxy promotion initiation", &["api_proxy.promoted"]),
            ("API Proxy version creation", &["api_proxy.version_created"]),
            (
                "Component creation, update, and deletion",
                &["component.created", "component.updated", "component.deleted"],
            ),
            ("Component promotion initiation", &["component.promoted"]),
            ("Component version creation", &["component.version_created"]),
            (
                "Component deployment, redeployment, and undeployment initiation",
                &["component.deployed", "component.redeployed", "component.undeployed"],
            ),
            ("Component API access mode update", &["component.access_mode_updated"]),
            (
                "Enabling and disabling component auto-deployment on commit",
                &["component.auto_deploy_enabled", "component.auto_deploy_disabled"],
            ),
            ("Component build configuration update", &["component.build_config_updated"]),
            (
                "Organization user management",
                &["user.invited", "user.created", "user.deleted", "user.role_assigned", "user.role_revoked"],
            ),
            (
                "On-premises key management",
                &["onprem_key.created", "onprem_key.rotated", "onprem_key.revoked"],
            ),
            (
                "Project-level configuration management",
                &["project_config.created", "project_config.updated", "project_config.deleted"],
            ),
        ];
        for (operation, actions) in seeds {
            for name in *actions {
                assert!(lookup(name).is_some(), "{operation}: {name} is not catalogued");
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(label("component.deployed"), Some("Component deployment initiated"));
        assert_eq!(label("component.exploded"), None);
    }

    /// Every action the benchmark generator (shared/tools/gen_events.py) emits is catalogued.
    #[test]
    fn covers_generator_actions() {
        for name in [
            "project.created",
            "component.promoted",
            "component.version_created",
            "component.access_mode_updated",
            "component.auto_deploy_enabled",
            "component.build_config_updated",
            "api_proxy.version_created",
            "user.invited",
            "user.role_assigned",
            "user.logged_in",
            "group.member_removed",
            "onprem_key.rotated",
            "project_config.deleted",
            "proxy_service.disabled",
            "carbon_application.created",
            "log_level.updated",
            "escalation_policy.updated",
            "runbook.deleted",
            "role.updated",
        ] {
            assert!(lookup(name).is_some(), "{name}");
        }
    }
}
