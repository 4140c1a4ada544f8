from __future__ import annotations

from django.urls import path

from django_ import views

urlpatterns = [
    path("cached/", views.cached_page),
    path("report/<str:name>/", views.report),
    path("areport/<str:name>/", views.areport),
    path("invalidate/<str:name>/", views.invalidate),
]
