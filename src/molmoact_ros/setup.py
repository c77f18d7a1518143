from setuptools import find_packages, setup

PACKAGE = 'molmoact_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    # The bundled trained model's compact weights (molmoact_ros.nodes.engine_provider.SIM_LIFT).
    package_data={PACKAGE: ['model/weights/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='molmoact_ros maintainers',
    maintainer_email='maintainers@molmoact-ros.dev',
    description='MolmoAct perception -> planning -> control pipeline for ROS 2.',
    license='Apache-2.0',
    # colcon test runs pytest only when pytest is declared as a test extra (tests_require is ignored
    # and makes colcon fall back to unittest, which finds no tests).
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'build_tiny_model = molmoact_ros.model.tiny:main',
            'build_dataset = molmoact_ros.training.build:main',
            'train_molmoact = molmoact_ros.training.train:main',
            'pipeline = molmoact_ros.nodes.entry:pipeline_main',
            'perception_node = molmoact_ros.nodes.entry:perception_main',
            'trace_planner_node = molmoact_ros.nodes.entry:planner_main',
            'action_decoder_node = molmoact_ros.nodes.entry:action_main',
            'command_sink = molmoact_ros.nodes.command_sink:main',
        ],
        # MolmoAct on vLLM: loaded by vLLM in every process when this package is installed in its
        # environment (scripts/setup_vllm.sh); registers the architecture MolmoActForActionReasoning.
        'vllm.general_plugins': [
            'molmoact = molmoact_ros.vllm_plugin:register',
        ],
    },
)
