"""cloudless.policy — who may do what through the user API, and which specs are admitted.

Pure deciders (``rbac.decide``, ``routes.classify``, ``audit.overflow``,
``admission.admit``) are kept apart from the edge that gathers their facts and acts on their
answers (``access``: an aiohttp middleware plus the user, role, audit and policy routes).

=================  =============================================================================
module             owns
=================  =============================================================================
``rbac``           verbs, resources, ``Role``/``Rule``/``User``, the built-in roles,
                   ``parse_role``, ``decide(user, role, request) -> AccessDecision`` (pure)
``routes``         the table from user-API route to (verb, resource, where the namespace is)
``audit``          ``AuditEntry`` and the bounded ``AuditLog`` in the store (``audit/<time>``)
``expressions``    CEL: compile with checks (syntax, variables, nesting, cost exponent), evaluate
``admission``      policies: ``parse_policy``, ``admit(policies, variables) -> Verdict`` (pure)
``admission_api``  policies in the store, compiled once per version; ``/v1/policies``
``access``         ``install(app, api)``: the RBAC middleware, users and roles, audit writes
``openapi_paths``  the OpenAPI description of these routes
=================  =============================================================================

See ``docs/security.md`` ("Users and roles", "Admission policies").
"""
