from __future__ import annotations

from django.urls import path

from django_ import views

urlpatterns = [
    path("cached/", views.cached_page),
    path("report/<str:name>/", views.report),
    path("areport/<str:name>/", views.areport),
    path("invalidate/<str:name>/", views.invalidate),
    path("session/put/", views.session_put),
    path("session/drop/<str:name>/", views.session_drop),
    path("session/show/", views.session_show),
    path("session/login/<str:user_id>/", views.session_login),
    path("session/logout/", views.session_logout),
    path("limited/", views.limited),
    path("alimited/", views.alimited),
    path("soft/", views.soft),
    path("writes/", views.writes),
    path("tiered/", views.tiered),
    path("tasks/add/", views.task_add),
    path("tasks/mail/", views.task_mail),
    path("tasks/charge/", views.task_charge),
    path("tasks/later/", views.task_later),
    path("tasks/bad/", views.task_bad_arguments),
    path("tasks/order/", views.task_order),
    path("tasks/result/<str:result_id>/", views.task_result),
    path("tasks/aresult/<str:result_id>/", views.atask_result),
    path("tiers/login/<int:user_id>/", views.tiers_login),
    path("tiers/whoami/", views.whoami),
    path("tiers/awhoami/", views.awhoami),
    path("tiers/health/", views.whoami),
]
