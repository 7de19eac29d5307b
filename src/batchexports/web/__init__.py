"""The web page of batchexports, served at `/` by the same process as the API.

Pages (server-rendered Django templates, plus `static/web/app.js` for what happens without a
reload; no build step, nothing fetched from another origin):

- `/login/`, `/logout/`: Django session sign-in (`batchexports set-password --email E` sets a password);
- `/projects/<id>/`: the project's batch exports, with pause switches and their latest runs;
  the header's switcher lists the projects of the user's organizations only;
- `/projects/<id>/exports/new/[?type=T]`, `.../<export>/edit/`: a form built from the destination's
  config serializer, validated by the API's `BatchExportSerializer`, with a destination test;
- `/projects/<id>/exports/<export>/`: runs, backfills, logs and per-day charts, updated live;
- `/projects/<id>/exports/<export>/runs/<run>/`: one run and its logs.

Buttons that change things (pause, retry, cancel, backfill, test, delete) call the JSON API with
the session and its CSRF token, so the API's rules (scopes, isolation, secrets) apply unchanged.
"""
