"""URLs of the console's test project: the admin, as a site mounts it."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
