"""The web dashboard's page, scripts and styles (package data, served by
:mod:`confer.server.http.dashboard`): plain HTML, CSS and JavaScript modules, no build step.
"""
