"""The report URL's short way through Django.

Every endpoint posts a health report every few hours: at fleet scale POST /api/v1/reports is
most of the portal's traffic. Its view needs no session, user, CSRF token, message or static
file, so the middleware after this one and URL resolution were CPU spent for nothing on
every report (bench/ingest.py). SecurityMiddleware still runs before it; the view itself
authenticates the endpoint's token.
"""

REPORT_PATHS = frozenset({"/api/v1/reports", "/api/v1/reports/"})  # as fleet/api/agent_urls.py matches them


class ReportShortcutMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.report_view = None

    def __call__(self, request):
        if request.path_info not in REPORT_PATHS:
            return self.get_response(request)
        request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware would check it (DisallowedHost is a 400)
        if self.report_view is None:
            from fleet.api.agent import ReportView

            self.report_view = ReportView.as_view()
        return self.report_view(request)
