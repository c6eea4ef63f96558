from setuptools import find_packages, setup

with open('README.rst', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='cacheops',
    version='0.1.0',
    description='ORM queryset caching with event-driven invalidation for Django, on Redis',
    long_description=long_description,
    long_description_content_type='text/x-rst',
    license='BSD-3-Clause',
    # benchmarks/ and tools/ serve bench.py, demo.py and runtests.py in the repository only
    packages=find_packages(exclude=['tests', 'tests.*', 'tools', 'tools.*', 'benchmarks', 'benchmarks.*']),
    package_data={'cacheops': ['lua/*.lua', 'py.typed', 'templates/cacheops/*.html']},
    python_requires='>=3.10',
    install_requires=[
        'django>=4.2',
        'redis>=4.0',
        # 1.13: the oldest checked to import on Python 3.10+ (1.8 imports collections.Mapping)
        'funcy>=1.13',
    ],
    # redis-py parses replies with hiredis when it is installed: faster hits
    extras_require={'hiredis': ['redis[hiredis]']},
    classifiers=[
        'Framework :: Django',
        'Framework :: Django :: 4.2',
        'Framework :: Django :: 5.2',
        'Framework :: Django :: 6.0',
        'Framework :: Django :: 6.1',
        'License :: OSI Approved :: BSD License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
    ],
)
