"""cloudless.policy — who may do what through the user API, and which specs are admitted.

Pure deciders (``rbac.decide``, ``routes.classify``, ``audit.overflow``) are kept apart from
the edge that gathers their facts and acts on their answers (``access``: an aiohttp
middleware plus the ``/v1/users``, ``/v1/roles`` and ``/v1/audit`` routes).

==========  ====================================================================================
module      owns
==========  ====================================================================================
``rbac``    verbs, resources, ``Role``/``Rule``/``User``, the built-in roles, ``parse_role``,
            ``decide(user, role, request) -> AccessDecision`` (pure)
``routes``  the table from user-API route to (verb, resource, where the namespace comes from)
``audit``   ``AuditEntry`` and the bounded ``AuditLog`` in the store (``audit/<time>``)
``access``  ``install(app, api)``: the RBAC middleware, user and role records, audit writes
==========  ====================================================================================

See ``docs/security.md`` ("Users and roles").
"""
